"""An in-memory LRU of ImageBind embeddings keyed by file content, for servers.

A stateless chat API receives the whole conversation on every request, so an image sent
in turn one arrives again in turns two, three and four. Keyed by the sha256 of the file's
bytes and the modality it is read as, its embedding is computed once and found again by
any later request (from any client) without decoding or encoding the file.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import torch


def content_key(path: str | Path, modality: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{modality}:{h.hexdigest()}"


class EmbeddingLRU:
    """At most ``size`` embeddings (a few KB each); the least recently used leaves first."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: torch.Tensor) -> None:
        with self._lock:
            self._items[key] = value.detach()
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._items), "size": self.size, "hits": self.hits, "misses": self.misses}
