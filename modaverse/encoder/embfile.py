"""The embeddings file ``modaverse embed`` writes: safetensors, written atomically.

Layout: tensor ``embeddings`` [N, D] float32 in input order; metadata ``files`` and
``modalities`` (JSON lists), ``encoder`` (architecture name) and ``normalized``.
Writing goes through a temporary file and a rename, so a failed run never clobbers an
earlier result.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modaverse.core.atomic import write_atomic


def write(out: Path, embeddings: torch.Tensor, files: list[str], modalities: list[str], encoder: str) -> None:
    meta = {
        "files": json.dumps(files),
        "modalities": json.dumps(modalities),
        "encoder": encoder,
        "normalized": "true",
    }
    write_atomic(out, lambda tmp: save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata=meta))


def read(path: str | Path) -> tuple[torch.Tensor, list[str], list[str], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        emb = f.get_tensor("embeddings")
    return emb, json.loads(meta.get("files", "[]")), json.loads(meta.get("modalities", "[]")), meta


def describe(path: str | Path) -> str:
    """A human summary: one line per file and, for several files, their cosine similarities."""
    emb, files, mods, meta = read(path)
    lines = [f"{path}: embeddings {list(emb.shape)}, encoder {meta.get('encoder')}"]
    for i, (f, m) in enumerate(zip(files, mods, strict=True)):
        lines.append(f"  [{i}] {m:<7} |e|={emb[i].norm():6.3f}  {f}")
    if len(files) > 1:
        unit = torch.nn.functional.normalize(emb, dim=1)
        lines.append("  cosine similarity:")
        lines += ["   " + " ".join(f"{v:6.3f}" for v in row) for row in (unit @ unit.T).tolist()]
    return "\n".join(lines)
