"""Where modaverse keeps what it derives once and reuses: downloads, converted models, features.

One root for every cache, so a user moves or clears them all with one variable:
``$MODAVERSE_CACHE``, else ``$XDG_CACHE_HOME/modaverse``, else ``~/.cache/modaverse``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("MODAVERSE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "modaverse")
    return Path(root, *parts)


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
