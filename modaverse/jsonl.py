"""Reading JSONL files line by line, with errors that name the file."""

from __future__ import annotations

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
