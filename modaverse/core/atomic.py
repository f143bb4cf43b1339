"""Atomic file writes: a temporary file in the same folder, then a rename.

A crash, a full disk or Ctrl-C mid-write leaves the earlier file intact, never a half one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomic(out: Path, write: Callable[[Path], None]) -> None:
    """Calls ``write(tmp)`` and moves ``tmp`` onto ``out`` only once it succeeded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(out: Path, text: str) -> None:
    write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_text(doc) -> str:
    """The project's JSON file form: indented, UTF-8 kept readable, newline-terminated."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(out: Path, doc) -> None:
    write_text_atomic(out, json_text(doc))


def write_folder(out: Path, fill) -> None:
    """Fills a sibling temporary folder, then swaps it in: ``out`` is always whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
