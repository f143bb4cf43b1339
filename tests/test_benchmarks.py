"""`modaverse eval run`: the six paper benchmarks on tiny fabricated datasets in the documented layout."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modaverse.data.synth import write_benchmark_set
from modaverse.evaluation.paper.runner import BenchmarkError, run_benchmark
from modaverse.evaluation.paper.tasks import BENCHMARKS
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {m: write_benchmark_set(root / m, m, num=5, seed=1) for m in ("image", "video", "audio")}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_runs_and_writes_the_papers_table(name, datasets, tiny_pipe, tmp_path):
    bench = BENCHMARKS[name]
    out = tmp_path / name
    results = run_benchmark(name, datasets[bench.modality], tiny_pipe.config, out, limit=4, spice=False,
                            progress=False, pipe=tiny_pipe)
    assert results["items"] == 4 and results["scored"] + results["failed"] == 4
    assert results["scored"] >= 3, (results["failed_ids"], results["notes"])  # the runner works, not only its errors
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"{bench.modality}-{i:05d}" for i in range(4)]
    table = (out / "results.md").read_text()
    assert bench.title in table and "| ModaVerse (paper) | " + " | ".join(c.paper for c in bench.columns) in table
    assert json.loads((out / "results.json").read_text()) == results
    for column in bench.columns:  # every figure of the paper's table has ours beside it
        assert column.header in table
        if column.header == "SPIDEr":  # needs SPICE, skipped here: the table says so
            assert results["columns"]["SPIDEr"] is None and "SPIDEr skipped (--no-spice)" in table
        else:
            assert isinstance(results["columns"][column.header], float), (column, results["notes"])
    if bench.task == "generate":
        manifest = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
        assert [m["file"] for m in manifest] == [r["file"] for r in rows if "file" in r]
        for r in rows:
            assert ("file" in r) != ("error" in r)
            if "file" in r:
                assert (out / r["file"]).is_file()


def test_a_resumed_caption_run_equals_an_uninterrupted_one(datasets, tiny_pipe, tmp_path):
    """Encoding batches are aligned to item positions, so resuming mid-batch changes no prediction."""
    config = tiny_pipe.config.model_copy(deep=True)
    config.encoder.batch_size = 2
    pipe = tiny_pipe
    straight = run_benchmark("coco-captions", datasets["image"], config, tmp_path / "a", spice=False, progress=False,
                             pipe=pipe)
    run_benchmark("coco-captions", datasets["image"], config, tmp_path / "b", limit=3, spice=False, progress=False,
                  pipe=pipe)
    with open(tmp_path / "b" / "predictions.jsonl", "a") as f:
        f.write('{"id": "image-0000')  # a line cut off by a kill
    resumed = run_benchmark("coco-captions", datasets["image"], config, tmp_path / "b", spice=False,
                            progress=False, pipe=pipe)
    assert (tmp_path / "a" / "predictions.jsonl").read_text() == (tmp_path / "b" / "predictions.jsonl").read_text()
    assert (tmp_path / "a" / "results.md").read_text() == (tmp_path / "b" / "results.md").read_text()
    assert resumed == {**straight, "data": resumed["data"]}


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


def test_kill_mid_run_and_rerun_give_the_same_table(datasets, tiny_pipe, tmp_path):
    """A real SIGKILL of the console script while it renders, then the same command again."""
    exe = Path(sys.executable).parent / "modaverse"
    args = [str(exe), "eval", "run", "coco-t2i", "--data", str(datasets["image"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args + ["-o", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_lines(tmp_path / "killed" / "predictions.jsonl", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "results.md").exists()
    again = subprocess.run(args + ["-o", str(tmp_path / "killed")], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    # the uninterrupted run, in this process: the command's default profile (tiny)
    whole = run_benchmark("coco-t2i", datasets["image"], tiny_pipe.config, tmp_path / "whole", progress=False,
                          pipe=tiny_pipe)
    assert (tmp_path / "killed" / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()
    assert json.loads(again.stdout)["columns"] == whole["columns"]
    assert "| ModaVerse (paper) | 11.24 |" in again.stderr  # the table is shown, not only written


def _write(root: Path, rows: list) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("rows, message", [
    (["{not json"], "annotations.jsonl:1: invalid JSON"),
    ([{"id": "a", "file": "x.png"}], "annotations.jsonl:1: \"captions\" must be a non-empty list"),
    ([{"id": "a", "file": "missing.png", "captions": ["c"]}], "annotations.jsonl:1: missing.png: no such file"),
    ([{"id": "a", "file": "clip.wav", "captions": ["c"]}], "clip.wav: not a image file for coco-captions"),
    ([{"id": "a", "file": "x.png", "captions": ["c"]}, {"id": "a", "file": "x.png", "captions": ["d"]}],
     "annotations.jsonl:2: id a appears twice"),
])
def test_bad_datasets_are_refused_before_any_work(rows, message, tmp_path, tiny_pipe):
    from tests import media_factory

    root = tmp_path / "data"
    root.mkdir()
    media_factory.image(root / "x.png")
    media_factory.audio(root / "clip.wav")
    _write(root, rows)
    with pytest.raises(BenchmarkError, match=message.replace("(", r"\(")):
        run_benchmark("coco-captions", root, tiny_pipe.config, tmp_path / "out", pipe=tiny_pipe)
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_cli_errors_are_one_line_and_keep_other_runs(datasets, tmp_path):
    r = run_cli("eval", "run", "coco-captions", "--data", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such folder" in r.stderr
    r = run_cli("eval", "run", "coco-caption", "--data", datasets["image"])
    assert r.returncode == 2 and "invalid choice: 'coco-caption'" in r.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"benchmark": "msrvtt-v2t"}))
    (out / "predictions.jsonl").write_text('{"id": "x", "caption": "kept"}\n')
    r = run_cli("eval", "run", "coco-captions", "--data", datasets["image"], "-o", out)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "holds a different run (benchmark differs" in r.stderr
    assert (out / "predictions.jsonl").read_text() == '{"id": "x", "caption": "kept"}\n'


def test_data_synth_writes_benchmark_sets_in_the_documented_layout(tmp_path):
    r = run_cli("data", "synth", "-o", tmp_path, "--num", "3", "--benchmark-sets", "2")
    assert r.returncode == 0, r.stderr
    for modality in ("image", "video", "audio"):
        root = tmp_path / "benchmarks" / modality
        rows = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all((root / row["file"]).is_file() and len(row["captions"]) == 2 for row in rows)
        assert f"{root}" in r.stdout
