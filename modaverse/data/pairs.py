"""What ``modaverse bind`` learns from: captioned images and videos, and views paired with them.

A pairs file is JSON lines in ``media.jsonl``'s form (``modaverse data synth`` writes one), paths
relative to the file. A line with a ``caption`` (an image or a video) trains vision and text (another modality's caption is only a
label: they never learn from text); a line
with a ``pair`` (the path of an image or a video, itself a line of the file) binds its modality to
that anchor's frozen embedding. Other keys are kept as labels for evaluation; ``split`` (when given)
keeps held-out lines out of training.

Every file is loaded once, through the same loaders inference uses, into memory (float16 for the
large vision inputs): a step then costs the network, not the decoders.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modaverse.config import MediaConfig
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import MODALITIES, TOWER


@dataclass
class Entry:
    line: int
    path: Path
    modality: str
    caption: str | None = None
    pair: Path | None = None
    split: str = "train"
    labels: dict = field(default_factory=dict)


def read_pairs(path: str | Path, splits: tuple[str, ...] | None = ("train",)) -> list[Entry]:
    """The file's lines of the given splits (None: all), checked before anything is loaded."""
    path = Path(path)
    if not path.is_file():
        raise ModaverseError(f"{path}: no such pairs file (`modaverse data synth --output DIR` writes "
                             "DIR/media.jsonl)")
    root, out = path.parent, []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModaverseError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("media"), str):
            raise ModaverseError(f"{path}:{n}: expected an object with a `media` path")
        modality = doc.get("modality")
        if modality not in MODALITIES:
            raise ModaverseError(f"{path}:{n}: modality {modality!r}; choose from {', '.join(MODALITIES)}")
        if splits is not None and doc.get("split", "train") not in splits:
            continue
        vision = modality in ("image", "video")  # other modalities never learn from text: their caption is a label
        entry = Entry(n, root / doc["media"], modality, doc.get("caption") if vision else None,
                      root / doc["pair"] if isinstance(doc.get("pair"), str) else None, doc.get("split", "train"),
                      {k: v for k, v in doc.items() if k not in ("media", "modality", "pair", "split")})
        if not entry.path.is_file():
            raise ModaverseError(f"{path}:{n}: {entry.path}: no such file")
        out.append(entry)
    anchors = {e.path for e in out if e.modality in ("image", "video")}
    for e in out:
        if e.pair is not None and e.pair not in anchors:
            raise ModaverseError(f"{path}:{e.line}: pair {e.pair} is not an image or video line of the file "
                                 "(in the same split)")
    return out


def load_tensors(entries: list[Entry], media: MediaConfig, progress: bool | None = None) -> list[torch.Tensor]:
    """Each entry's tower input, loaded once (vision inputs in float16 to halve the memory)."""
    from tqdm.auto import tqdm

    from modaverse.media import load_media

    out = []
    for e in tqdm(entries, unit="file", desc="load", disable=None if progress is None else not progress,
                  file=sys.stderr, leave=False):
        x = load_media(e.path, e.modality, media).tensor
        out.append(x.half() if TOWER[e.modality] == "vision" else x)
    return out
