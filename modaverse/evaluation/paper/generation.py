"""Generation metrics (``modaverse eval generation``): FID, IS, FD and CLIPSIM.

The statistics come from torchmetrics (``FrechetInceptionDistance`` and ``InceptionScore``
with a pass-through feature module), so the maths is a maintained library's; only the
feature extractors are ours (:mod:`.extractors`, for the reasons given there).

| output | metrics | features |
|---|---|---|
| image | FID, IS | FID Inception-v3 pool3 / logits |
| video | FID (over frames), CLIPSIM | Inception-v3 on ``video_frames`` frames per video; CLIP |
| audio | FD, IS | PANNs Cnn14 (16 kHz) embeddings / logits, as AudioLDM reports them |

Both sides are read from a folder (every media file in it) or a JSONL manifest of
``{"file": ..., "prompt": ...}`` rows, files relative to the manifest; CLIPSIM needs the
prompts, so a manifest on the generated side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modaverse.core.errors import ModaverseError
from modaverse.core.jsonl import json_objects

SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "video": (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif"),
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a"),
}


class GenerationEvalError(ModaverseError):
    """Inputs that cannot be scored; names the file or the side."""


class _Given(nn.Module):
    """Features already extracted: torchmetrics' metrics take them as their 'network' output."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def frechet_distance(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (FID/FD), in float64.

    Rounding can leave identical sets a hair below zero (-2e-6 for 4 images in 2048
    dimensions); a distance is never negative, so the result is floored at 0.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, x in (("generated", generated), ("reference", reference)):
        if x.shape[0] < 2:
            raise GenerationEvalError(f"the Fréchet distance needs at least 2 {name} items, got {x.shape[0]}")
    metric = FrechetInceptionDistance(feature=_Given(generated.shape[1]))
    metric.set_dtype(torch.float64)
    metric.update(reference.double(), real=True)
    metric.update(generated.double(), real=False)
    return max(0.0, float(metric.compute()))


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over ``splits`` shuffled groups; the shuffle is seeded so reruns agree."""
    from torchmetrics.image.inception import InceptionScore

    if logits.shape[0] < 2:
        raise GenerationEvalError(f"the Inception Score needs at least 2 generated items, got {logits.shape[0]}")
    splits = min(splits, logits.shape[0])
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer": they are given
        metric = InceptionScore(feature=_Given(logits.shape[1]), splits=splits)
        metric.update(logits.double())
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


@dataclass(frozen=True)
class Item:
    path: Path
    prompt: str | None = None


def read_side(source: str | Path, kind: str, what: str) -> list[Item]:
    """A folder's media files of ``kind`` (sorted), or a JSONL manifest's rows."""
    source = Path(source)
    if source.is_dir():
        items = [Item(p) for p in sorted(source.rglob("*")) if p.suffix.lower() in SUFFIXES[kind] and p.is_file()]
        if not items:
            raise GenerationEvalError(f"{source}: no {kind} files ({', '.join(SUFFIXES[kind])}) in the {what} folder")
        return items
    items = []
    for number, row in json_objects(source, GenerationEvalError, f"{what} manifest",
                                    shape='an object with a "file" string'):
        if not isinstance(row.get("file"), str):
            raise GenerationEvalError(f"{source}:{number}: expected an object with a \"file\" string")
        path = (source.parent / row["file"]).resolve()
        if not path.is_file():
            raise GenerationEvalError(f"{source}:{number}: {row['file']}: no such file")
        prompt = row.get("prompt")
        items.append(Item(path, prompt if isinstance(prompt, str) else None))
    if not items:
        raise GenerationEvalError(f"{source}: the {what} manifest lists no files")
    return items


def score(kind: str, generated: list[Item], reference: list[Item], extractors, *, seed: int = 0) -> dict:
    """Metrics of one output kind, as ``{"items", "reference_items", "metrics", "notes"}``."""
    metrics: dict[str, float] = {}
    gen, ref = [i.path for i in generated], [i.path for i in reference]
    if kind == "image":
        g_pool, g_logits = extractors.images(gen)
        r_pool, _ = extractors.images(ref)
        metrics["FID"] = frechet_distance(g_pool, r_pool)
        metrics["IS"], metrics["IS_std"] = inception_score(g_logits, seed=seed)
    elif kind == "audio":
        g_emb, g_logits = extractors.audio(gen)
        r_emb, _ = extractors.audio(ref)
        metrics["FD"] = frechet_distance(g_emb, r_emb)
        metrics["IS"], metrics["IS_std"] = inception_score(g_logits, seed=seed)
    elif kind == "video":
        missing = [str(i.path) for i in generated if not i.prompt]
        if missing:
            raise GenerationEvalError(f"{missing[0]}: CLIPSIM needs each generated video's prompt "
                                      "(give --generated as a JSONL manifest with \"prompt\")")
        g_frames = extractors.video_frames(gen)
        metrics["FID"] = frechet_distance(extractors.frames(g_frames)[0],
                                          extractors.frames(extractors.video_frames(ref))[0])
        metrics["CLIPSIM"] = float(extractors.clip_similarity(g_frames, [i.prompt for i in generated]).mean())
    else:
        raise GenerationEvalError(f"unknown output kind {kind!r}; use image, video or audio")
    return {"kind": kind, "items": len(generated), "reference_items": len(reference),
            "metrics": {k: round(v, 6) for k, v in metrics.items()}, "notes": list(extractors.notes)}
