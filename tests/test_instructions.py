"""`modaverse generate-instructions`: the real openai client against a real HTTP server on loopback."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from instructions import KINDS
from modaverse.data.records import read_records
from modaverse.instruct.dedup import NearDuplicates
from modaverse.instruct.replies import Rejected, to_record
from modaverse.instruct.sources import (
    SourceError,
    load_captions,
    load_references,
    load_seeds,
    load_templates,
)
from modaverse.instruct.tasks import Planner, messages

from . import media_factory
from .conftest import run_cli, run_on_terminal
from .fake_openai import FakeOpenAI, good_reply

MODALITIES = ("image", "video", "audio")
ENV = {"OPENAI_API_KEY": "sk-test", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    """Three real media files (one per modality) and their captions: few files, so tasks share them."""
    root = tmp_path_factory.mktemp("captions")
    (root / "media").mkdir()
    media_factory.image(root / "media" / "dog.png")
    media_factory.video(root / "media" / "waves.mp4")
    media_factory.audio(root / "media" / "bell.wav")
    lines = [{"modality": "image", "media": "media/dog.png", "caption": "a dog on a lawn"},
             {"modality": "video", "media": "media/waves.mp4", "caption": "waves rolling onto a beach"},
             {"modality": "audio", "media": "media/bell.wav", "caption": "a bell ringing twice"}]
    path = root / "captions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def one_caption(captions) -> Path:
    """One image only: few distinct tasks, so a repeated reply is sure to meet its twin."""
    path = captions.parent / "one.jsonl"
    path.write_text(captions.read_text().splitlines()[0] + "\n")
    return path


def _planner(captions_file, seed=0):
    return Planner(load_captions(captions_file), load_references(None), load_seeds(None), KINDS, seed)


def _generate(server, captions_file, out, *extra, num=12, env=None, timeout=300):
    return run_cli("generate-instructions", "--captions", captions_file, "--num", num, "--output", out,
                   "--base-url", server.base_url, *extra, env={**ENV, **(env or {})}, timeout=timeout)


def _lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()]


# -- shipped material ---------------------------------------------------------------------------
def test_seed_set_covers_every_input_and_output_combination():
    seeds = load_seeds(None)
    have = {(tuple(sorted(i.modality for i in s.inputs)), out) for s in seeds for out in s.outputs()}
    outputs = ("text", "text-to-image", "text-to-video", "text-to-audio")
    for n in range(4):
        for inputs in itertools.combinations(sorted(MODALITIES), n):
            for out in outputs:
                assert (inputs, out) in have, f"no seed maps {inputs or 'no input'} to {out}"
    assert {s.kind for s in seeds} == set(KINDS)


def test_references_and_templates_load():
    refs = load_references(None)
    assert {r.capability for r in refs} == {"text-to-image", "text-to-video", "text-to-audio"}
    templates = load_templates(None)
    assert set(templates.kinds) == set(KINDS)


# -- tasks --------------------------------------------------------------------------------------
def test_tasks_are_a_function_of_seed_and_index(captions):
    a, b, c = _planner(captions), _planner(captions), _planner(captions, seed=1)
    assert [a.task(i) for i in range(30)] == [b.task(i) for i in range(30)]
    assert [a.task(i) for i in range(30)] != [c.task(i) for i in range(30)]
    tasks = [a.task(i) for i in range(300)]
    assert {t.kind for t in tasks} == set(KINDS)
    for t in tasks:
        assert (t.target is not None) == (t.kind == "output-side")
        assert len({c.modality for c in t.inputs}) == len(t.inputs)
        assert t.kind != "input-side" or t.inputs
        assert all(r.capability == t.target for r in t.references)
        assert all(s.kind == t.kind for s in t.examples)
    assert {len(t.inputs) for t in tasks} == {0, 1, 2, 3}


def test_prompt_shows_captions_references_and_examples(captions):
    planner = _planner(captions)
    task = next(planner.task(i) for i in itertools.count() if planner.task(i).kind == "output-side"
                and planner.task(i).inputs)
    system, user = messages(task, load_templates(None), ("text-to-image", "text-to-video", "text-to-audio"))
    assert system["role"] == "system" and "text-to-video" in system["content"]
    assert task.target in user["content"]
    for c in task.inputs:
        assert c.caption in user["content"]
    for r in task.references:
        assert r.prompt in user["content"]
    for s in task.examples:
        assert s.instruction in user["content"]
    assert "$" not in user["content"]


# -- sources ------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, needle", [
    ({"modality": "smell", "media": "media/dog.png", "caption": "x"}, ":2: modality"),
    ({"modality": "image", "media": "media/none.png", "caption": "x"}, "caption 2 (media/none.png): no such media"),
    ({"modality": "image", "media": "media/dog.png"}, ":2: caption: Field required"),
    ("not json", ":2: invalid JSON"),
])
def test_bad_captions_name_the_line(captions, tmp_path, line, needle):
    bad = captions.parent / f"bad-{abs(hash(str(line)))}.jsonl"
    first = captions.read_text().splitlines()[0]
    bad.write_text(first + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(SourceError, match=None) as e:
        load_captions(bad)
    assert needle in str(e.value) and str(bad) in str(e.value)


def test_bad_references_seeds_and_templates(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"capability": "text-to-smell", "prompt": "roses"}) + "\n")
    with pytest.raises(SourceError, match=r"refs.jsonl:1: capability: unknown capability 'text-to-smell'"):
        load_references(refs)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"kind": "output-side", "inputs": [], "instruction": "Draw a cat.",
                                 "response": {"text": "Sure.", "invocations": []}}) + "\n")
    with pytest.raises(SourceError, match="output-side example must call a generator"):
        load_seeds(seeds)
    from instructions import ROOT

    folder = tmp_path / "templates"
    folder.mkdir()
    for f in (ROOT / "templates").iterdir():
        (folder / f.name).write_text(f.read_text())
    (folder / "reasoning.txt").write_text("Think about $inputs and $colour.")
    with pytest.raises(SourceError, match=r"reasoning.txt: unknown placeholder \$colour"):
        load_templates(folder)


# -- replies ------------------------------------------------------------------------------------
def _task(captions, kind, with_inputs=True):
    planner = _planner(captions)
    return next(planner.task(i) for i in itertools.count()
                if planner.task(i).kind == kind and bool(planner.task(i).inputs) == with_inputs)


def test_reply_becomes_a_record_with_media_relative_to_the_output(captions, tmp_path):
    task = _task(captions, "output-side")
    user_prompt = messages(task, load_templates(None), ("text-to-image", "text-to-video", "text-to-audio"))[1]
    content = json.dumps(good_reply(user_prompt["content"], 1))
    out_dir = tmp_path / "deep" / "out"
    record = to_record(task, content, "gen-s0-0000001", "test", out_dir, ("text-to-image", "text-to-video",
                                                                           "text-to-audio"))
    for ref, cap in zip(record.media(), task.inputs, strict=True):
        assert (out_dir / ref.path).resolve() == Path(cap.media)
        assert ref.modality == cap.modality
    assert record.messages[1].meta_response.invocations[0].capability == task.target


@pytest.mark.parametrize("content, reason", [
    ("", "empty reply"),
    ("I cannot help with that.", "invalid JSON"),
    ('{"instruction": "Hi", "response": {"text": "Hello", "invocations": []}, "extra": 1}', "extra: unknown key"),
    ('{"instruction": "Hi", "response": {"text": "Hello", "invocations": [{"capability": "text-to-image", '
     '"prompt": "two\\nlines"}]}}', "must be one line"),
    ('{"instruction": "", "response": {"text": "Hello", "invocations": []}}', "instruction"),
])
def test_bad_replies_are_rejected_with_the_reason(captions, tmp_path, content, reason):
    task = _task(captions, "output-side")
    with pytest.raises(Rejected, match=reason):
        to_record(task, content, "x", "test", tmp_path, ("text-to-image", "text-to-video", "text-to-audio"))


def test_replies_must_fit_their_kind(captions, tmp_path):
    caps = ("text-to-image", "text-to-video", "text-to-audio")
    describe = _task(captions, "input-side")
    calls = json.dumps({"instruction": "Describe it.", "response": {"text": "A dog.", "invocations": [
        {"capability": "text-to-image", "prompt": "a dog"}]}})
    with pytest.raises(Rejected, match="input-side reply answers in text only"):
        to_record(describe, calls, "x", "t", tmp_path, caps)
    make = _task(captions, "output-side")
    other = next(c for c in caps if c != make.target)
    wrong = json.dumps({"instruction": "Make it.", "response": {"text": "Here.", "invocations": [
        {"capability": other, "prompt": "a dog"}]}})
    with pytest.raises(Rejected, match=f"must call {make.target}"):
        to_record(make, wrong, "x", "t", tmp_path, caps)
    fenced = "Here you go:\n```json\n" + calls.replace("text-to-image", make.target) + "\n```\nEnjoy!"
    assert to_record(make, fenced, "x", "t", tmp_path, caps).id == "x"


def test_near_duplicates_are_about_the_same_media(captions, tmp_path):
    from modaverse.data.records import assistant, parse_record, user

    def rec(text, answer, *media):
        return parse_record({"id": text[:20], "messages": [user(text, *media), assistant(answer)]})

    dedup = NearDuplicates(0.8)
    base = "What is the dog in this photo doing on the lawn this morning and why"
    answer = "The dog is lying on the lawn in the sun, probably resting after playing"
    assert dedup.admit("a", rec(base, answer, "dog.png")) is None
    assert dedup.admit("b", rec(base + " exactly", answer, "dog.png")) == "a"
    assert dedup.admit("c", rec(base, answer, "cat.png")) is None
    assert dedup.admit("d", rec("Tell me a story about a cat who sails", "Once upon a time", "dog.png")) is None
    assert len(dedup) == 3


# -- the command against a loopback server ------------------------------------------------------
FAULTS = {1: "429", 2: "500", 3: "stall", 4: "malformed", 5: "violate", 6: "duplicate", 7: "length"}


def _faulty(ordinal, attempt):
    """First attempts cycle through every fault; retries succeed."""
    return FAULTS.get(ordinal % 9) if attempt == 0 else None


def test_faulty_server_still_yields_n_valid_unique_records(one_caption, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(_faulty, stall=3.0) as server:
        r = _generate(server, one_caption, out, "--num", 24, "--concurrency", 4, "--timeout", 1, "--seed", 5)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    records = read_records(out)
    assert len(records) == summary["records"] == 24
    assert len({rec.id for rec in records}) == 24
    assert all(rec.id.startswith("gen-s5-") for rec in records)
    check = run_cli("data", "validate", out)
    assert check.returncode == 0 and "24 record(s) ok, 0 bad" in check.stdout, check.stdout

    rejects = _lines(tmp_path / "gen.rejects.jsonl")
    reasons = " | ".join(x["reason"] for x in rejects)
    assert "invalid JSON" in reasons and "unknown capability 'text-to-smell'" in reasons
    assert "cut off at" in reasons and "near-duplicate of gen-s5-" in reasons
    assert summary["rejected"] == len(rejects)
    assert not {x["id"] for x in rejects} & {rec.id for rec in records}
    assert all(x["reply"] is not None for x in rejects if "empty" not in x["reason"])

    # 429s, 500s and stalls were retried (except those in flight when the target was reached),
    # and the wait before a retry honoured Retry-After: 1 / the 1 s timeout
    attempts = server.attempts
    retried = 0
    for fault in ("429", "500", "stall"):
        hit = [a for a in attempts if a["fault"] == fault]
        retries = [next((b for b in attempts if b["ordinal"] == a["ordinal"] and b["attempt"] == 1), None)
                   for a in hit]
        assert any(retries), fault
        retried += sum(b is not None for b in retries)
        for a, b in zip(hit, retries, strict=True):
            if b is not None and fault in ("429", "stall"):
                assert b["time"] - a["time"] >= 0.95, fault  # not the 3 s stall either: < 3
    assert summary["retries"] >= retried
    assert summary["rate_limited"] == sum(a["fault"] == "429" for a in attempts)
    assert summary["failed"] == 0
    usage = _lines(tmp_path / "gen.usage.jsonl")
    assert summary["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage) > 0
    assert {u["status"] for u in usage} == {"accepted", "rejected"}
    assert len(usage) == 24 + len(rejects)  # never more requests answered than needed
    # structured outputs are asked for by default
    fmt = attempts[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True


def test_rerun_continues_without_duplicates(captions, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI() as server:
        first = _generate(server, captions, out, "--num", 6)
        again = _generate(server, captions, out, "--num", 6)
        more = _generate(server, captions, out, "--num", 10)
    assert first.returncode == again.returncode == more.returncode == 0, more.stderr
    assert json.loads(again.stdout)["accepted"] == 0
    ids = [r.id for r in read_records(out)]
    assert len(ids) == len(set(ids)) == 10
    # no task was asked for twice: a rerun skips what earlier runs finished
    asked_for = [json.dumps(a["body"]["messages"]) for a in server.first_attempts()]
    assert len(asked_for) == len(set(asked_for)) == 10


def _wait_for_lines(path: Path, n: int, proc, limit=120.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def _popen_generate(server, captions_file, out, num):
    exe = Path(sys.executable).parent / "modaverse"
    args = [str(exe), "generate-instructions", "--captions", str(captions_file), "--num", str(num), "--output",
            str(out), "--base-url", server.base_url, "--concurrency", "4"]
    # A suite started with SIGINT ignored (nohup, background jobs, some CI runners) passes that on to
    # its children; the Ctrl-C test needs the default handler back, as a terminal would give it.
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **ENV},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_sigkill_then_rerun_ends_with_exactly_n_records(captions, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(_faulty, latency=0.05, stall=3.0) as server:
        proc = _popen_generate(server, captions, out, 30)
        _wait_for_lines(out, 8, proc)
        proc.kill()
        proc.wait()
        before = out.read_text()
        kept = [json.loads(line)["id"] for line in before.splitlines()]
        with out.open("a") as f:  # as if the kill had landed mid-write
            f.write('{"id":"gen-s0-9999999","messages":[{"ro')
        r = _generate(server, captions, out, "--num", 30, "--concurrency", 4, "--timeout", 1)
    assert r.returncode == 0, r.stderr
    assert "removed an incomplete last line" in r.stderr
    records = read_records(out)
    ids = [rec.id for rec in records]
    assert len(ids) == len(set(ids)) == 30
    assert ids[: len(kept)] == kept  # nothing accepted before the kill was lost or rewritten
    assert out.read_text().startswith(before)
    rejected = {x["id"] for x in _lines(tmp_path / "gen.rejects.jsonl")}
    assert not rejected & set(ids)


def test_ctrl_c_keeps_every_accepted_record(captions, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(latency=0.05) as server:
        proc = _popen_generate(server, captions, out, 500)
        _wait_for_lines(out, 5, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    held = len(read_records(out))
    assert f"holds {held} record(s)" in err and "rerun the same command" in err
    assert "Traceback" not in err


def test_shards_split_the_work_without_overlap(captions, tmp_path):
    with FakeOpenAI() as server:
        runs = [_generate(server, captions, tmp_path / f"part{i}.jsonl", "--num", 9, "--shard", f"{i}/2")
                for i in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    parts = [read_records(tmp_path / f"part{i}.jsonl") for i in range(2)]
    assert [len(p) for p in parts] == [5, 4]
    for i, part in enumerate(parts):
        assert all(int(rec.id.rsplit("-", 1)[1]) % 2 == i for rec in part)


def test_without_structured_outputs_sends_no_schema_and_reads_fenced_json(captions, tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(fenced=True) as server:
        r = _generate(server, captions, out, "--num", 4, "--no-structured-outputs")
    assert r.returncode == 0, r.stderr
    assert all("response_format" not in a["body"] for a in server.attempts)
    assert len(read_records(out)) == 4


def test_rate_limit_spaces_requests(captions, tmp_path):
    with FakeOpenAI() as server:
        r = _generate(server, captions, tmp_path / "gen.jsonl", "--num", 6, "--concurrency", 6,
                      "--max-requests-per-minute", 300)
    assert r.returncode == 0, r.stderr
    times = sorted(a["time"] for a in server.attempts)
    # 300/min = one every 0.2 s: six requests span about 1 s (unlimited, all six arrive at once)
    assert times[-1] - times[0] >= 0.8
    assert all(later - earlier >= 0.3 for earlier, later in zip(times, times[2:], strict=False))


def test_dry_run_prints_prompts_without_key_or_output(captions, tmp_path):
    env = {k: "" for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    r = run_cli("generate-instructions", "--captions", captions, "--num", 3, "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("=== request ") == 3 and "--- system ---" in r.stdout
    assert "response_format: JSON schema" in r.stdout
    assert any(c in r.stdout for c in ("a dog on a lawn", "waves rolling onto a beach", "a bell ringing twice"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["no-key", "bad-key", "no-model", "unreachable", "not-ours", "bad-shard",
                                  "all-rejected", "all-failing"])
def test_errors_are_one_line(captions, tmp_path, case):
    out = tmp_path / "gen.jsonl"
    fault = {"all-rejected": "malformed", "all-failing": "500"}.get(case)
    with FakeOpenAI(lambda ordinal, attempt: fault, api_key="sk-right") as server:
        if case == "all-rejected":
            r = _generate(server, captions, out, "--num", 100, env={"OPENAI_API_KEY": "sk-right"})
            needle = "the last 50 replies were all rejected (last: invalid JSON"
        elif case == "all-failing":
            r = _generate(server, captions, out, "--max-retries", 0, env={"OPENAI_API_KEY": "sk-right"})
            needle = "16 requests in a row failed after 0 retries each; last: InternalServerError"
        elif case == "no-key":
            r = run_cli("generate-instructions", "--captions", captions, "--num", 2, "--output", out,
                        env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
            needle = "OPENAI_API_KEY is not set"
        elif case == "bad-key":
            r = _generate(server, captions, out, env={"OPENAI_API_KEY": "sk-wrong"})
            needle = "refused the API key (401: Incorrect API key provided)"
        elif case == "no-model":
            r = _generate(server, captions, out, "--model", "missing-model", env={"OPENAI_API_KEY": "sk-right"})
            needle = "model 'missing-model' or the chat-completions endpoint was not found"
        elif case == "unreachable":
            r = run_cli("generate-instructions", "--captions", captions, "--num", 2, "--output", out,
                        "--base-url", "http://127.0.0.1:9/v1", "--max-retries", "0", env=ENV)
            needle = "cannot reach http://127.0.0.1:9/v1"
        elif case == "not-ours":
            out.write_text("hello\n")
            r = _generate(server, captions, out, env={"OPENAI_API_KEY": "sk-right"})
            needle = "gen.jsonl:1: not a training record"
        else:
            r = _generate(server, captions, out, "--shard", "2/2")
            needle = "'2/2' is not a shard i/n"
    assert r.returncode == 2, r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0], r.stderr
    assert case != "not-ours" or out.read_text() == "hello\n"


def test_progress_bar_on_a_terminal_and_summary_on_stdout(captions, tmp_path):
    with FakeOpenAI(latency=0.02) as server:
        code, bar, out = run_on_terminal(
            "generate-instructions", "--captions", captions, "--num", 5, "--output", tmp_path / "gen.jsonl",
            "--base-url", server.base_url, "--price", 1, 2, env=ENV)
    assert code == 0
    assert "generate: 100%" in bar and "5/5" in bar and "rej=" in bar and "tok=" in bar and "$=" in bar
    summary = json.loads(out)
    expected = (summary["prompt_tokens"] * 1 + summary["completion_tokens"] * 2) / 1e6
    assert summary["cost_usd"] == pytest.approx(expected, abs=1e-6) and summary["cost_usd"] > 0


def test_a_200_that_is_not_a_chat_completion_is_retried_and_never_crashes(one_caption, tmp_path):
    """A proxy's HTML page, plain text or JSON of another shape, answered with 200: the request is
    retried like a 5xx; one that never gets a completion is a failed request with its reason in the
    rejects file. (It used to end the run: 'str' object has no attribute 'usage'.)"""
    from collections import Counter

    seen = Counter()
    lock = threading.Lock()

    def odd(ordinal, attempt):
        with lock:
            seen[ordinal] += 1
            tries = seen[ordinal]
        if ordinal == 1:
            return "html"  # never answers properly
        return {0: "text", 2: "shape", 3: "html"}.get(ordinal) if tries == 1 else None

    out = tmp_path / "gen.jsonl"
    with FakeOpenAI(odd) as server:
        r = _generate(server, one_caption, out, "--num", 6, "--concurrency", 2, "--max-retries", 1, "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    assert summary["records"] == len(read_records(out)) == 6 and summary["failed"] == 1
    reasons = [x["reason"] for x in _lines(tmp_path / "gen.rejects.jsonl")]
    assert any("not a chat completion" in x and "Welcome to the proxy" in x for x in reasons), reasons
