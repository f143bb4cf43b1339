"""The bound encoder as the round trip's second judge, independent of the pixel rules in :mod:`.judges`.

It reads each file through the loaders the assistant uses and names its colour, shape, motion or
sound zero-shot: the nearest class-prompt ensemble of the text tower, as ``eval bind`` scores the
encoder. The two judges fail differently (the rules on a blurred edge, the encoder on a picture
unlike its training set), so a generator that satisfies both is drawing the thing, not a trick.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modaverse.config import Config
from modaverse.evaluation.binding import class_embeddings, class_prompts

#: capability -> (modality its files are read as, {verdict: the attributes that must all be named right}).
READS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "text-to-image": ("image", {"colour": ("colour",), "shape": ("shape",)}),
    "text-to-video": ("video", {"colour": ("colour",), "shape": ("shape",), "direction": ("motion",)}),
    "text-to-audio": ("audio", {"sound": ("sound",)}),
    "image-editing": ("image", {"applied": ("colour", "shape")}),
}


class EncoderJudge:
    """``judge(capability, paths, contents)`` -> one verdict dict per file."""

    def __init__(self, config: Config):
        from modaverse.encoder.embed import Encoder

        self.encoder = Encoder.from_config(config.encoder, config.media, text=True)
        self._prompts: dict[tuple[str, str], tuple[list[str], torch.Tensor]] = {}

    @property
    def available(self) -> bool:
        """A text tower without its trained tokenizer names classes at chance: no judge."""
        return self.encoder.tokenizer is not None

    def _classes(self, modality: str, attribute: str) -> tuple[list[str], torch.Tensor]:
        key = (modality, attribute)
        if key not in self._prompts:
            prompts = class_prompts(modality, attribute)
            self._prompts[key] = list(prompts), class_embeddings(self.encoder, prompts)
        return self._prompts[key]

    @torch.no_grad()
    def __call__(self, capability: str, paths: list[Path], contents: list[dict]) -> list[dict[str, bool]]:
        modality, verdicts = READS[capability]
        emb, _ = self.encoder.embed(paths, modality)
        emb = F.normalize(emb.float(), dim=-1)
        named: dict[str, list[str]] = {}
        for attribute in {a for attrs in verdicts.values() for a in attrs}:
            names, text = self._classes(modality, attribute)
            named[attribute] = [names[g] for g in (emb @ text.T).argmax(1).tolist()]
        rows = []
        for i, content in enumerate(contents):
            rows.append({verdict: all(named[a][i] == content[a] for a in attrs)
                         for verdict, attrs in verdicts.items() if all(content.get(a) for a in attrs)})
        return rows

    def real(self, capability: str, arrays: list[np.ndarray], contents: list[dict]) -> list[dict[str, bool]]:
        """The same judge on real samples of the world, written as the generators write their files."""
        from PIL import Image

        from modaverse.media.writers import encode_video, encode_wav

        modality = READS[capability][0]
        suffix, write = {"image": (".png", lambda p, a: Image.fromarray(a).save(p)),
                         "video": (".mp4", encode_video), "audio": (".wav", encode_wav)}[modality]
        with tempfile.TemporaryDirectory(prefix="modaverse-judge-") as tmp:
            paths = [Path(tmp) / f"real-{i}{suffix}" for i in range(len(arrays))]
            for path, array in zip(paths, arrays, strict=True):
                write(path, array)
            return self(capability, paths, contents)
