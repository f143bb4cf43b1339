"""Training records: schema, synthetic set, importers and `modaverse data validate`, on real files."""

import json
import re
import shutil

import pytest

from modaverse.data.records import RecordError, parse_record, read_lines, record_line, record_schema
from modaverse.data.synth import synthesize

from .conftest import IB, one_line_error, run_cli

GOOD = {"messages": [
    {"role": "user", "text": "Describe <media>.", "media": [{"path": "a.png"}]},
    {"role": "assistant", "meta_response": {"text": "A cat.", "invocations": []}}]}


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["messages"].append({"role": "user", "text": "more"}), "last message must be the assistant"),
    (lambda r: r["messages"].insert(1, r["messages"][0]), "messages[1] is 'user'"),
    (lambda r: r["messages"][0].update(text="<media> and <media>"), "2 <media> placeholder(s) but 1 media"),
    (lambda r: r["messages"][1]["meta_response"].update(
        invocations=[{"capability": "text-to-smell", "prompt": "x"}]), "unknown capability 'text-to-smell'"),
    (lambda r: r["messages"][1]["meta_response"].update(
        invocations=[{"capability": "text-to-image", "prompt": "two\nlines"}]), "one line"),
    (lambda r: r.update(extra=1), "extra: unknown key"),
    (lambda r: r["messages"][0]["media"][0].update(modality="smell"), "media.0.modality"),
])
def test_bad_records_say_why(change, reason):
    doc = json.loads(json.dumps(GOOD))
    change(doc)
    with pytest.raises(RecordError, match=re.escape(reason)):
        parse_record(doc)


def test_record_round_trip_and_schema():
    rec = parse_record(GOOD)
    assert parse_record(json.loads(record_line(rec))) == rec
    schema = record_schema()
    assert set(schema["properties"]) == {"id", "messages", "source"}
    assert "MetaResponse" in schema["$defs"]


def test_read_lines_numbers_every_problem(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(GOOD) + "\n\n{not json\n" + json.dumps({"messages": []}) + "\n")
    lines = list(read_lines(f))
    assert [(x.number, x.error is None) for x in lines] == [(1, True), (3, False), (4, False)]
    assert "invalid JSON" in lines[1].error and "messages" in lines[2].error


def test_synth_is_deterministic_and_valid(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize(a, num=30, seed=3)
    synthesize(b, num=30, seed=3)
    for name in ("train.jsonl", "test.jsonl", "shifted.jsonl", "media.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = sorted(p.name for p in (a / "media").iterdir())
    assert files == sorted(p.name for p in (b / "media").iterdir())
    assert all((a / "media" / f).read_bytes() == (b / "media" / f).read_bytes() for f in files)  # videos too
    train, test, shifted = ([json.loads(x) for x in (a / f"{split}.jsonl").read_text().splitlines()]
                            for split in ("train", "test", "shifted"))
    assert len(train) + len(test) + len(shifted) == 30 and len(test) == len(shifted) == 3
    kinds = {p.split("/")[1].split("-")[0] for p in media_of(train)}
    assert kinds == {"image", "video", "audio"}


def media_of(records: list[dict]) -> set[str]:
    return {m["path"] for r in records for t in r["messages"] if t["role"] == "user" for m in t["media"]}


def test_synth_splits_share_no_file_and_the_shifted_one_lies_outside_the_training_ranges(tmp_path):
    """In distribution: new files from the training ranges. Shifted: each file has its listed axes
    (several per file, every axis somewhere) outside them, the background among them."""
    import hashlib

    from modaverse.data.scenes import BACKGROUNDS, SHIFTED_AXES, SPANS, axes

    synthesize(tmp_path, num=240, seed=11, test_fraction=0.25, shifted_fraction=0.25)
    records = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()]
               for s in ("train", "test", "shifted")}
    files = {s: media_of(r) for s, r in records.items()}
    digests = {s: {hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in fs} for s, fs in files.items()}
    for one, other in (("train", "test"), ("train", "shifted"), ("test", "shifted")):
        assert not files[one] & files[other] and not digests[one] & digests[other]
    manifest = [json.loads(x) for x in (tmp_path / "media.jsonl").read_text().splitlines()]
    assert {m["media"] for m in manifest if m["split"] == "shifted"} >= files["shifted"]
    moved: dict[str, set[str]] = {modality: set() for modality in SPANS}  # sensor views included
    for m in manifest:
        spans, params = SPANS[m["modality"]], m["params"]
        if "background" in params:
            palette = BACKGROUNDS["shifted" if "background" in params.get("shifted", ()) else "train"]
            assert tuple(params["background"]) in palette
        if m["split"] != "shifted":
            assert all(span.holds(params[name]) for name, span in spans.items()), m
            continue
        assert len(params["shifted"]) == SHIFTED_AXES[m["modality"]]
        assert not any(spans[name].holds(params[name]) for name in params["shifted"] if name in spans), m
        assert all(span.holds(params[name]) for name, span in spans.items() if name not in params["shifted"]), m
        moved[m["modality"]] |= set(params["shifted"])
    assert all(moved[k] == set(axes(k)) for k in moved)  # every axis is shifted in some file


def test_some_pictures_hold_two_objects_and_their_answers_name_both(tmp_path):
    """Both objects are drawn (each colour's pixels are there) and every answer about the file names
    both, in the fixed colour order, whatever the layout."""
    import numpy as np
    from PIL import Image

    from modaverse.data.scenes import COLOURS

    synthesize(tmp_path, num=120, seed=5)
    manifest = [json.loads(x) for x in (tmp_path / "media.jsonl").read_text().splitlines()]
    pairs = {m["media"]: m for m in manifest if m.get("others") and "pair" not in m}  # views of them carry it too
    singles = [m for m in manifest if m["modality"] == "image" and not m.get("others")]
    assert pairs and singles and all(m["modality"] == "image" for m in pairs.values())
    records = [json.loads(x) for split in ("train", "test", "shifted")
               for x in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
    about = 0
    for m in pairs.values():
        objects = [(m["colour"], m["shape"]), *map(tuple, m["others"])]
        (c1, s1), (c2, s2) = objects
        assert c1 != c2 and list(COLOURS).index(c1) < list(COLOURS).index(c2)
        pixels = np.asarray(Image.open(tmp_path / m["media"]).convert("RGB")).reshape(-1, 3)
        assert all((pixels == COLOURS[c]).all(axis=1).sum() > 20 for c in (c1, c2)), m["media"]
        whole = f"a {c1} {s1} and a {c2} {s2}"
        assert m["caption"] == whole  # what `make demo` prints beside the question
        answers = {f"They are {c1} and {c2}.", f"Two {s1}s." if s1 == s2 else f"A {s1} and a {s2}."}
        for r in records:
            first = r["messages"][0]["media"]
            if first and first[0]["path"] == m["media"]:
                reply = r["messages"][1]["meta_response"]
                said = " ".join([reply["text"], *(i["prompt"] for i in reply["invocations"])])
                assert whole in said.lower() or reply["text"] in answers, (whole, said)
                about += 1
    assert about > 0  # (a text-only record leaves its file unused)


def test_data_synth_and_validate_cli(tmp_path):
    r = run_cli("data", "synth", "--output", tmp_path, "--num", "12", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "train.jsonl").is_file()
    r = run_cli("data", "synth", "--output", tmp_path, "--num", "12")
    one_line_error(r, "already holds", "--force")
    one_line_error(run_cli("data", "synth", "--output", tmp_path / "x", "--test-fraction", "2"),
                    "--test-fraction", "2.0 is not between 0 and 1")
    one_line_error(run_cli("data", "synth", "--output", tmp_path / "x", "--test-fraction", "0.6",
                           "--shifted-fraction", "0.5"), "add up to more than 1")
    assert not (tmp_path / "x").exists()  # refused before anything is written
    # each held-out split gets one input at least: too few conversations for both is refused the same way
    one_line_error(run_cli("data", "synth", "--output", tmp_path / "y", "--num", "2", "--test-fraction", "0.9",
                           "--shifted-fraction", "0.1"), "hold out 2 + 1 inputs, but there are 2")
    assert not (tmp_path / "y").exists()
    r = run_cli("data", "validate", tmp_path / "train.jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("0 bad")

    # one file with every kind of problem, each reported with its line number
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    missing = json.loads(json.dumps(first))
    missing["messages"][0] = {"role": "user", "text": "What is <media>?", "media": [{"path": "media/gone.png"}]}
    wrong = json.loads(json.dumps(first))
    wrong["messages"][-1]["meta_response"]["invocations"] = [{"capability": "text-to-smell", "prompt": "x"}]
    long = {"messages": [{"role": "user", "text": "word " * 400}, {"role": "assistant",
                                                                  "meta_response": {"text": "ok"}}]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(missing), json.dumps(wrong), "{oops", json.dumps(long)]) + "\n")
    r = run_cli("data", "validate", bad, "--set", "train.max_length=128")
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[0] == f"{bad}:2: media: media/gone.png: no such file"
    assert out[1].startswith(f"{bad}:3: invalid: messages.") and "unknown capability 'text-to-smell'" in out[1]
    assert out[2].startswith(f"{bad}:4: invalid: invalid JSON")
    assert out[3].startswith(f"{bad}:5: too long: ") and "only 128 fit" in out[3]
    assert out[-1] == f"{bad}: 1 record(s) ok, 4 bad (2 invalid, 1 media, 1 too long)"
    assert "Traceback" not in r.stderr
    one_line_error(run_cli("data", "validate", tmp_path / "nope.jsonl"), "nope.jsonl", "no such file")


def _media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(IB / "image_a.png", root / "cat.jpg")  # PandaGPT appends .jpg; content is sniffed as PNG
    shutil.copy(IB / "image_a.png", root / "a.png")
    shutil.copy(IB / "audio_16k.wav", root / "meow.wav")
    shutil.copy(IB / "video.mp4", root / "v.mp4")
    return root


def test_import_official(tmp_path):
    root = _media_root(tmp_path)
    src = tmp_path / "official.json"
    src.write_text(json.dumps([
        {"instruction": "Generate an image of an animal based on the provided vocalization.",
         "media": {"image": "none", "audio": "meow.wav", "video": "none"},
         "meta_response": {"modality": "image", "prompt": "A photo of a cat"}},
        {"instruction": "What happens here?", "media": {"image": "a.png", "video": "v.mp4"},
         "meta_response": {"modality": "[TEXT]", "prompt": "A clip."}},
        {"instruction": "x", "media": {}, "meta_response": {"modality": "smell", "prompt": "y"}},
    ]))
    out = tmp_path / "out" / "train.jsonl"
    r = run_cli("data", "import", "official", src, "--output", out, "--media-root", root)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 record(s)" in r.stdout and "skipped 1" in r.stdout
    assert f"{src}[2]: skipped: meta_response.modality 'smell'" in r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs[0]["messages"][0]["media"] == [{"path": "../media/meow.wav", "modality": "audio"}]
    assert recs[0]["messages"][1]["meta_response"] == {
        "text": "", "invocations": [{"capability": "text-to-image", "prompt": "A photo of a cat"}]}
    assert [m["modality"] for m in recs[1]["messages"][0]["media"]] == ["image", "video"]
    assert recs[1]["messages"][1]["meta_response"] == {"text": "A clip.", "invocations": []}
    r = run_cli("data", "validate", out)
    assert r.returncode == 0, r.stdout


def test_import_llava_and_pandagpt(tmp_path):
    root = _media_root(tmp_path)
    llava = tmp_path / "llava.json"
    llava.write_text(json.dumps([
        {"id": "x1", "image": "a.png", "conversations": [
            {"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": "Grey."}]},
        {"id": "x2", "conversations": [{"from": "robot", "value": "hi"}]},
    ]))
    out = tmp_path / "llava.jsonl"
    r = run_cli("data", "import", "llava", llava, "--output", out, "--media-root", root)
    assert r.returncode == 0, r.stderr
    assert "skipped: conversation[0].from is 'robot'" in r.stderr
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["id"] == "x1" and rec["source"] == "llava"
    assert rec["messages"][0] == {"role": "user", "text": "What is this?\n<media>",
                                  "media": [{"path": "media/a.png", "modality": "image"}]}
    assert rec["messages"][2] == {"role": "user", "text": "Which colour?", "media": []}
    assert rec["messages"][3]["meta_response"]["text"] == "Grey."

    panda = tmp_path / "panda.json"
    panda.write_text(json.dumps([{"image_name": "cat", "conversation": [
        {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A cat on a mat."}]}]))
    out = tmp_path / "panda.jsonl"
    r = run_cli("data", "import", "pandagpt", panda, "--output", out, "--media-root", root)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert rec["messages"][0]["media"] == [{"path": "media/cat.jpg", "modality": "image"}]
    assert run_cli("data", "validate", out).returncode == 0
    one_line_error(run_cli("data", "import", "pandagpt", panda, "--output", out), "already exists", "--force")
    one_line_error(run_cli("data", "import", "llava", tmp_path / "none.json", "--output", tmp_path / "n.jsonl"),
                    "none.json", "no such file")


def test_data_schema_cli():
    r = run_cli("data", "schema")
    assert r.returncode == 0
    assert json.loads(r.stdout)["title"] == "Record"


def test_validate_decodes_every_file_as_training_would(tmp_path):
    """A WAV labelled `image` and a truncated PNG pass a signature check but kill training: they are
    reported as FILE:LINE before it starts. --no-decode keeps the quick structural check."""
    from . import media_factory as mf

    media = tmp_path / "media"
    media.mkdir()
    mf.image(media / "ok.png")
    mf.audio(media / "sound.wav")
    full = mf.image(media / "whole.png", size=(400, 300))
    (media / "cut.png").write_bytes(full.read_bytes()[: full.stat().st_size // 2])

    def record(path, modality=None):
        ref = {"path": f"media/{path}", **({"modality": modality} if modality else {})}
        return json.dumps({"messages": [{"role": "user", "text": "What is <media>?", "media": [ref]},
                                        {"role": "assistant", "meta_response": {"text": "A picture."}}]})

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join([record("ok.png"), record("sound.wav", "image"), record("cut.png")]) + "\n")
    r = run_cli("data", "validate", data)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert out[0] == f"{data}:2: media: media/sound.wav: labelled image, but the file is audio"
    assert out[1].startswith(f"{data}:3: media: media/cut.png: cannot decode image")
    assert out[-1] == f"{data}: 1 record(s) ok, 2 bad (2 media)"
    quick = run_cli("data", "validate", data, "--no-decode")
    assert quick.returncode == 1 and quick.stdout.splitlines()[-1] == f"{data}: 2 record(s) ok, 1 bad (1 media)"  # the cut PNG passes
