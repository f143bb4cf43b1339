"""An on-disk cache of ImageBind features, keyed by file content, shared by runs and epochs.

The research code ran ImageBind on every sample at every step, one sample at a time. The
encoder is frozen, so its output for a file never changes: here each file is encoded once,
in batches, and stored in safetensors shards under a folder named after everything that
decides the features (architecture, weights, preprocessing). A shard is written atomically
and only ever added, so a killed run keeps the shards it finished, and any later run or
epoch reuses them. There is no index file to keep in sync: the shards' own keys are the index.

Keys are ``<modality>-<sha256 of the file>``, so renaming or copying a file costs nothing and
editing one re-encodes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from modaverse.config import Config
from modaverse.core.cachedir import cache_dir

SHARD_SIZE = 1024  # features per shard: what a killed encoding pass can lose at most


def default_root() -> Path:
    return cache_dir("features")


def encoder_fingerprint(config: Config) -> str:
    """Identifies the features an encoder config produces (not its device or batch size)."""
    enc = config.encoder
    weights: object = None
    if enc.sha256:
        weights = enc.sha256
    elif enc.weights:  # hashing a 4.5 GB file every run is slow: its path, size and mtime stand in
        p = Path(enc.weights)
        weights = [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else enc.weights
    from modaverse.core.cachedir import sha256_of
    from modaverse.encoder.imagebind.towers import tower_files

    towers = {t: sha256_of(p) for t, p in tower_files(enc.tower_weights).items() if t in _built(config)}
    doc = {"arch": enc.arch, "kwargs": enc.kwargs, "weights": weights, "seed": None if enc.weights else enc.seed,
           "dtype": enc.dtype, "media": config.media.model_dump(mode="json"), **({"towers": towers} if towers else {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _built(config: Config) -> set[str]:
    from modaverse.core.modality import TOWER

    return {TOWER[m] for m in config.encoder.modalities}


def file_key(path: str | os.PathLike, modality: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{modality}-{h.hexdigest()}"


class FeatureCache:
    """``root/<fingerprint>/shard-*.safetensors``; ``ensure`` encodes what is missing, ``get`` reads."""

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        self.folder = Path(root).expanduser() / fingerprint
        self._where: dict[str, Path] | None = None

    @classmethod
    def for_config(cls, config: Config, root: str | os.PathLike | None = None) -> FeatureCache:
        return cls(root or config.train.feature_cache or default_root(), encoder_fingerprint(config))

    def index(self) -> dict[str, Path]:
        if self._where is None:
            from safetensors import safe_open

            self._where = {}
            for shard in sorted(self.folder.glob("shard-*.safetensors")):
                with safe_open(str(shard), "pt") as f:
                    self._where.update(dict.fromkeys(f.keys(), shard))
        return self._where

    def missing(self, keys: Sequence[str]) -> list[str]:
        have = self.index()
        return [k for k in dict.fromkeys(keys) if k not in have]

    def ensure(self, items: Sequence[tuple[str, str | os.PathLike, str]], encoder,
               on_progress: Callable[[int], None] | None = None) -> int:
        """Encodes every ``(key, path, modality)`` not cached yet; returns how many were encoded."""
        from safetensors.torch import save_file

        from modaverse.core.atomic import write_atomic

        have = self.index()
        todo = list({k: (k, p, m) for k, p, m in items if k not in have}.values())
        self.folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), SHARD_SIZE):
            chunk = todo[start : start + SHARD_SIZE]
            feats = []
            for b in range(0, len(chunk), encoder.batch_size):
                batch = chunk[b : b + encoder.batch_size]
                feats.append(encoder.encode([encoder.load(p, m) for _, p, m in batch]))
                if on_progress:
                    on_progress(len(batch))
            tensors = {k: f.contiguous() for (k, _, _), f in zip(chunk, torch.cat(feats), strict=True)}
            shard = self.folder / f"shard-{os.getpid()}-{start // SHARD_SIZE:05d}-{chunk[0][0][-12:]}.safetensors"
            write_atomic(shard, lambda tmp, t=tensors: save_file(t, str(tmp)))
            have.update(dict.fromkeys(tensors, shard))
        return len(todo)

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """``[len(keys), D]`` float32, in order."""
        from safetensors import safe_open

        where = self.index()
        absent = [k for k in keys if k not in where]
        if absent:
            raise KeyError(f"{len(absent)} feature(s) not cached, e.g. {absent[0]}")
        rows: dict[str, torch.Tensor] = {}
        by_shard: dict[Path, list[str]] = {}
        for k in dict.fromkeys(keys):
            by_shard.setdefault(where[k], []).append(k)
        for shard, ks in by_shard.items():
            with safe_open(str(shard), "pt") as f:
                for k in ks:
                    rows[k] = f.get_tensor(k)
        return torch.stack([rows[k] for k in keys]) if keys else torch.empty(0, 0)


class LazyTable:
    """``table[rows]`` -> ``[len(rows), D]`` float32, read from the cache's shards when a batch asks.

    Training used to load every feature it would use into one tensor on every process: at a
    million 1024-d features, 4 GB per process, copied N times. Here a process holds the keys and
    reads only a batch's rows (each shard opened, read and closed), so its memory does not grow
    with the features' size (``benchmarks/feature_table.py``).
    """

    def __init__(self, cache: FeatureCache, keys: Sequence[str]):
        self.cache, self.keys = cache, list(keys)
        absent = cache.missing(self.keys)
        if absent:
            raise KeyError(f"{len(absent)} feature(s) not cached, e.g. {absent[0]}")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, rows: Sequence[int]) -> torch.Tensor:
        return self.cache.get([self.keys[r] for r in rows])
