"""What every command group shares: the parser class, the config and checkpoint options, value types."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modaverse.core import values
from modaverse.core.errors import ModaverseError


class Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and a pointer to --help), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def arg_type(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """A value check (raising ValueError) as an argparse type whose message is the check's own."""

    def read(text: str):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    read.__name__ = getattr(check, "__name__", "value")
    return read


positive_int = arg_type(values.positive_int)
count = arg_type(values.count)
positive_float = arg_type(values.positive_float)
fraction = arg_type(values.fraction)


def device(text: str) -> str:
    from modaverse.config import check_device

    return arg_type(check_device)(text)


def add_config_args(p: argparse.ArgumentParser, default: str = "tiny") -> None:
    p.add_argument("--config", "-c", default=None,
                   help=f"packaged config name (see `modaverse configs`) or YAML path; default: {default}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set encoder.device=cpu (repeatable)")


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="D",
                   help="trained weights: a `modaverse train` run folder or one of its checkpoints; the "
                   "model is rebuilt as the checkpoint describes (default: the config's `checkpoint`)")


def add_run_args(p: argparse.ArgumentParser, default_dir: str, max_steps_help: str,
                 resume_help: str = "continue the run in OUTPUT_DIR from its latest checkpoint") -> None:
    """The arguments every resumable run shares (``train``, ``bind``, ``zoo train``)."""
    p.add_argument("--output-dir", "-o", metavar="D", help=f"run folder (default: {default_dir})")
    p.add_argument("--max-steps", type=positive_int, metavar="N", help=max_steps_help)
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT_DIR")


def run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``output_dir``, ``resume`` and ``overwrite`` for a recipe, refusing the pair that contradicts."""
    if args.resume and args.overwrite:
        raise ModaverseError("--resume and --overwrite are alternatives; give one")
    return {"output_dir": args.output_dir, "resume": args.resume, "overwrite": args.overwrite}


def load(args: argparse.Namespace):
    """The config the command names, rebuilt around ``--checkpoint`` when one is given (its
    model-shaping settings come from the checkpoint; ``--set`` still wins)."""
    from modaverse.config import load_config

    if getattr(args, "checkpoint", None):
        from modaverse.checkpoint import config_for

        return config_for(args.checkpoint, args.config or "tiny", args.overrides)
    return load_config(args.config or "tiny", args.overrides)


def check_writable(out: Path) -> None:
    """Fails before any work when the output cannot be written (no file is touched)."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ModaverseError(f"{out}: cannot write there ({parent} is not a writable folder)")
    if out.is_dir():
        raise ModaverseError(f"{out}: is a directory; give a file name ending in .safetensors")


def default_out_dir(kind: str) -> Path:
    import time

    return Path("outputs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
