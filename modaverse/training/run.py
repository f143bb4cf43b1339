"""A run's folder and its schedule: where checkpoints go, when a run may start, resume or replace
another, and which examples each step reads.

The data order is a pure function of (seed, step), so a resumed run sees exactly the batches
the uninterrupted one would have.
"""

from __future__ import annotations

import gc
import logging
import math
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from modaverse import checkpoint
from modaverse.config import Config
from modaverse.core.errors import ModaverseError

log = logging.getLogger("modaverse")

STEP_PREFIX = "step-"
RUN_FILES = ("latest", "summary.json", "config.yaml")


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def stream(n: int, seed: int, start: int, count: int) -> list[int]:
    """Positions ``start .. start+count`` of an endless sequence of seeded per-epoch shuffles."""
    out = []
    while len(out) < count:
        epoch, offset = divmod(start + len(out), n)
        take = min(n - offset, count - len(out))
        out += _permutation(n, seed, epoch)[offset : offset + take]
    return out


@dataclass
class Plan:
    examples: int
    global_batch: int
    total_steps: int
    warmup_steps: int


def plan(config: Config, examples: int, processes: int) -> Plan:
    t = config.train
    global_batch = t.batch_size * t.grad_accum * processes
    total = t.max_steps or max(1, math.ceil(t.epochs * examples / global_batch))
    return Plan(examples, global_batch, total, round(total * t.warmup_ratio))


def step_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{STEP_PREFIX}*") if (p / checkpoint.MANIFEST).is_file())


def check_output(out: Path, resume: bool, overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from; refuses to mix a new run into an old run's folder.

    ``overwrite`` lets a new run replace an earlier one (:func:`clear_run` removes it once the new
    run's data and model are ready, so a run refused for bad input loses nothing). ``resume`` on a
    folder with no step checkpoint yet starts the run (there is nothing to lose); on a finished run
    it is refused.
    """
    steps = step_dirs(out) if out.is_dir() else []
    finished = (out / checkpoint.FINAL / checkpoint.MANIFEST).is_file()
    if overwrite:
        return None
    if finished and not steps:
        raise ModaverseError(f"{out}: holds a finished run (final/) with no step checkpoint to resume; choose "
                             "another --output-dir, or pass --overwrite to replace it")
    if not resume:
        if steps or finished:
            raise ModaverseError(f"{out}: already holds a training run; pass --resume to continue it, --overwrite "
                                 "to replace it, or choose another --output-dir")
        return None
    if not steps:
        log.info("%s: no checkpoint yet, so the run starts from the beginning", out)
        return None
    latest = out / checkpoint.LATEST
    if latest.is_file() and (out / latest.read_text().strip() / checkpoint.MANIFEST).is_file():
        return out / latest.read_text().strip()
    return steps[-1]


def clear_run(out: Path) -> None:
    """Removes an earlier run's checkpoints and files from ``out`` (``--overwrite``)."""
    steps = step_dirs(out) if out.is_dir() else []
    if not steps and not (out / checkpoint.FINAL).exists():
        return
    for d in [*steps, out / checkpoint.FINAL]:
        shutil.rmtree(d, ignore_errors=True)
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)
    log.info("%s: removed the earlier run (--overwrite)", out)


def prepare_folder(out: Path, config: Config, overwrite: bool) -> None:
    """Only once data and model are ready may ``--overwrite`` remove the earlier run; then the run's
    config is written and half-written step checkpoints of a killed run are cleared away."""
    import yaml

    from modaverse.core.atomic import write_text_atomic

    if overwrite:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    for stale in out.glob(f".{STEP_PREFIX}*.partial"):
        shutil.rmtree(stale, ignore_errors=True)


def step_folder(out: Path, step: int) -> tuple[Path, str]:
    """An empty sibling folder to write step ``step``'s checkpoint into, and the step's name."""
    name = f"{STEP_PREFIX}{step:06d}"
    tmp = out / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp, name


def publish_step(out: Path, tmp: Path, name: str, keep: int) -> None:
    """Renames a written step checkpoint into place, points ``latest`` at it and keeps the last ``keep``."""
    from modaverse.core.atomic import write_text_atomic

    shutil.rmtree(out / name, ignore_errors=True)
    tmp.rename(out / name)
    write_text_atomic(out / checkpoint.LATEST, name + "\n")
    for old in step_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class Recipe:
    """A run as torchtune recipes read: ``run()`` = setup, train, finish, cleanup (``train`` and ``bind``)."""

    def run(self) -> dict:
        """Runs (or resumes) the run; returns its summary (also written to ``summary.json``)."""
        try:  # setup too: a refused output folder is found after the process group exists
            self.setup()
            self.train()
            return self.finish()
        finally:
            self.cleanup()

    def setup(self) -> None:
        raise NotImplementedError

    def train(self) -> None:
        raise NotImplementedError

    def finish(self) -> dict:
        raise NotImplementedError

    def cleanup(self) -> None:
        # A process group left to interpreter exit tears down gloo's threads mid-flight: a worker can die
        # with SIGABRT ("terminate called without an active exception") after a run that succeeded.
        # destroy_process_group only forgets the group: DDP's reducer (held by the wrapped model, and
        # by accelerate's list of prepared objects) keeps its gloo context alive until those go too.
        acc = self.__dict__.get("acc")
        if acc is not None:
            acc.free_memory()
        for name in ("model", "optimizer", "scheduler"):
            self.__dict__.pop(name, None)
        gc.collect()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def bounded(convs: list, config: Config, seed: int, processes: int) -> list:
    """The conversations a short run uses: ``train.max_examples``, or what ``max_steps`` batches
    can reach, as a seeded sample in file order, so only their files are encoded."""
    t = config.train
    budget = t.max_examples
    if t.max_steps:
        reach = t.max_steps * t.batch_size * t.grad_accum * processes
        budget = min(budget or reach, reach)
    if not budget or budget >= len(convs):
        return convs
    keep = sorted(_permutation(len(convs), seed, -1)[:budget])
    log.info("using %d of %d conversations (train.max_examples / max_steps)", budget, len(convs))
    return [convs[i] for i in keep]
