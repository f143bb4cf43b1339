"""Reading JSONL files line by line, with errors that name the file, and resuming appended ones."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path


def numbered_lines(path: str | Path, error: type[Exception], what: str = "JSONL") -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; a missing file or a folder raises ``error``."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a {what} file") from None
    with handle:
        yield from ((n, text) for n, text in enumerate(handle, 1) if text.strip())


def json_objects(path: str | Path, error: type[Exception], what: str = "JSONL", *,
                 shape: str = "a JSON object", hint: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line; bad JSON or a non-object raises ``error``
    naming FILE:LINE (``shape`` says what an object should hold, ``hint`` what to do about it)."""
    for number, text in numbered_lines(path, error, what):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{number}: invalid JSON ({e.msg} at column {e.colno}){hint}") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{number}: expected {shape}{hint}")
        yield number, row


def drop_partial_line(path: Path, block: int = 1 << 16) -> None:
    """A kill mid-write can leave a last line without its newline; it was never accepted.

    Reads backwards from the end, a block at a time: the output may be gigabytes.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        cut = end
        while cut > 0:
            start = max(0, cut - block)
            f.seek(start)
            newline = f.read(cut - start).rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            cut = start
        f.truncate(cut)
    logging.getLogger("modaverse").warning("%s: removed an incomplete last line left by an interrupted run", path)
