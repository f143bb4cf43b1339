"""Training beyond one process: DDP and FSDP2, two machines simulated on loopback, features encoded by every
rank.

Every run is a real ``accelerate launch`` of ``modaverse train``: two CPU processes over gloo, each
on half the global batch of a one-process run on the same data, which is the reference.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modaverse import checkpoint
from modaverse.data.synth import synthesize

ROOT = Path(__file__).parent.parent
STEPS = 6
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


def _train_args(data: Path, run: Path, cache: Path, per_process_batch: int, *more: str) -> list[str]:
    sets = [f"train.data={data / 'train.jsonl'}", f"train.feature_cache={cache}", "train.eval_data=null",
            f"train.batch_size={per_process_batch}", "train.log_every=1", "train.lr=3e-3", "train.save_every=2",
            *more]
    return ["-m", "modaverse", "train", "--config", "tiny-train", "--output-dir", str(run), "--max-steps",
            str(STEPS), *[f"--set={s}" for s in sets]]


def _launch(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no",
            "--dynamo_backend", "no", *launcher]


FSDP = ("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(stderr: str) -> list[float]:
    return [float(x) for x in re.findall(r"step \d+/\d+ loss ([0-9.]+)", stderr)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / checkpoint.WEIGHTS))


def _like(run: Path, reference: Path, atol: float = 2e-4) -> None:
    """The same tensors, whole (gathered, not one process's shard), equal within float reordering."""
    a, b = _weights(run), _weights(reference)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < atol, worst


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num=48, seed=5)
    return root


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The reference: one process on the whole global batch (8), full fine-tuning and LoRA."""
    root = tmp_path_factory.mktemp("one")
    runs = {}
    for name, more in (("full", ()), ("lora", ("trainable.llm=lora",))):
        r = _run([sys.executable, *_train_args(data, root / name, root / "cache", 8, *more)])
        runs[name] = (root / name, _losses(r.stderr))
    return runs


def test_fsdp_matches_one_process_and_resumes_after_sigkill(data, one_process, tmp_path):
    """Full fine-tuning of the tiny LLM sharded over two processes, which also encode the features
    (a fresh cache): the same losses and weights as one process; killed and resumed, the same weights."""
    run, cache = tmp_path / "fsdp", tmp_path / "cache"
    r = _run(_launch(*FSDP, *_train_args(data, run, cache, 4)))
    assert "FSDP2 (fully_shard) over 2 processes on 1 machine(s), gloo backend" in r.stderr
    assert "newly encoded by 2 process(es)" in r.stderr
    # each process wrote its own shards into the shared cache
    writers = {p.name.split("-")[1] for p in cache.glob("*/shard-*.safetensors")}
    assert len(writers) == 2, writers
    reference, losses = one_process["full"]
    assert _losses(r.stderr) == pytest.approx(losses, rel=1e-3)
    _like(run, reference)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and len(set(summary["weights_sha256"])) == 1
    assert r.stderr.count("examples (") == 1 and r.stderr.count(" parameters (") == 1  # one process speaks
    # an error every process meets is printed once
    again = subprocess.run(_launch(*FSDP, *_train_args(data, run, cache, 4)), capture_output=True, text=True,
                           timeout=600, env=ENV, cwd=ROOT)
    assert again.returncode != 0 and again.stderr.count("already holds a training run") == 1, again.stderr[-2000:]
    # a real SIGKILL of the launcher's whole process group after the step-2 checkpoint, then --resume
    cut = tmp_path / "cut"
    cmd = _launch(*FSDP, *_train_args(data, cut, cache, 4))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (cut / "step-000002").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "final").exists(), "the run finished before it could be killed"
    r = _run([*cmd, "--resume"])
    assert "resumed from" in r.stderr
    a, b = _weights(run), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_lora_matches_one_process(data, one_process, tmp_path):
    """LoRA: frozen base weights and trainable adapters in the same sharded layers."""
    run = tmp_path / "fsdp-lora"
    r = _run(_launch(*FSDP, *_train_args(data, run, tmp_path / "cache", 4, "trainable.llm=lora")))
    reference, losses = one_process["lora"]
    assert _losses(r.stderr) == pytest.approx(losses, rel=1e-3)
    _like(run, reference)
    assert not any(".base_layer." in k for k in _weights(run))  # only what trains is saved


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_on_loopback_train_as_one(data, one_process, tmp_path):
    """Two launchers, one per simulated machine (``--num_machines 2 --machine_rank 0/1``), join one job."""
    run, port = tmp_path / "two-machines", str(_free_port())
    procs = []
    for rank in ("1", "0"):
        cmd = _launch("--multi_gpu", "--num_machines", "2", "--machine_rank", rank, "--main_process_ip", "127.0.0.1",
                      "--main_process_port", port, *_train_args(data, run, tmp_path / "cache", 4))
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                      cwd=ROOT))
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[1][1][-3000:]
    machine0 = outputs[1][1]
    assert "over 2 processes on 2 machine(s)" in machine0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and len(summary["weights_sha256"]) == 2  # both ranks reported their weights
    assert len(set(summary["weights_sha256"])) == 1
    reference, losses = one_process["full"]
    assert _losses(machine0) == pytest.approx(losses, rel=1e-3)
    _like(run, reference)


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "the launcher started 2 processes but accelerate joined 1"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "asks for DeepSpeed, which accelerate runs only on GPUs"),
])
def test_a_launch_accelerate_would_run_as_something_else_is_refused(monkeypatch, env, message):
    """What accelerate does on CPUs with these settings (a one-process job, DeepSpeed dropped) is refused."""
    from accelerate import Accelerator

    from modaverse.core.errors import ModaverseError
    from modaverse.training import sharding

    acc = Accelerator(cpu=True)
    assert sharding.check_launch(acc) is False  # one process: nothing to shard
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ModaverseError, match=message):
        sharding.check_launch(acc)
