"""The frozen input side: files -> ImageBind embeddings, batched per tower.

:class:`Encoder` owns the native ImageBind and the preprocessing settings. It keeps the
callers' order while batching files of the same modality together, which is where the
speed comes from (the research code encodes one sample at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from modaverse.config import EncoderConfig
from modaverse.core.device import DTYPES, pick_device
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import TOWER
from modaverse.encoder.imagebind.checkpoint import load_into, read_state_dict, resolve_weights
from modaverse.encoder.imagebind.config import ImageBindConfig
from modaverse.encoder.imagebind.model import ImageBind
from modaverse.media import MediaConfig, MediaInput, load_media


def build_imagebind(config: ImageBindConfig, weights: Path | None = None, seed: int = 0) -> ImageBind:
    """An ImageBind from a checkpoint file, or with seeded random weights when none is given."""
    if weights is None:
        model = ImageBind(config)
        model.init_weights(seed)
        return model
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = ImageBind(config)
    load_into(model, state, str(weights))
    return model


class Encoder:
    """ImageBind plus ImageBind's preprocessing; ``embed`` returns upstream's embeddings."""

    def __init__(self, model: ImageBind, media: MediaConfig = MediaConfig(), *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 8):
        self.model = model.to(device=device, dtype=dtype)
        self.media = media
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size

    @classmethod
    def from_config(cls, config: EncoderConfig, media: MediaConfig = MediaConfig()) -> Encoder:
        weights = None
        if config.weights:
            weights = resolve_weights(config.weights, config.weights_url, config.sha256)
        model = build_imagebind(ImageBindConfig.from_encoder(config), weights, config.seed)
        return cls(model, media, device=pick_device(config.device), dtype=DTYPES[config.dtype],
                   batch_size=config.batch_size)

    @property
    def dim(self) -> int:
        return self.model.config.out_embed_dim

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, t in TOWER.items() if t in self.model.towers)

    def load(self, path: str | Path, modality: str | None = None) -> MediaInput:
        item = load_media(path, modality, self.media)
        if TOWER[item.modality] not in self.model.towers:
            raise ModaverseError(
                f"{path}: the encoder was built without the {item.modality} tower "
                f"(configured modalities: {', '.join(self.modalities)})"
            )
        return item

    @torch.inference_mode()
    def encode(self, items: Sequence[MediaInput]) -> torch.Tensor:
        """Embeds already-loaded inputs of any mix of modalities, in order: [N, D] float32."""
        out = torch.empty(len(items), self.dim)
        by_modality: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_modality.setdefault(item.modality, []).append(i)
        for modality, idx in by_modality.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                x = torch.stack([items[i].tensor for i in chunk]).to(self.device, self.dtype)
                out[chunk] = self.model.forward_tower(TOWER[modality], x).float().cpu()
        return out

    def embed(self, paths: Iterable[str | Path], modality: str | None = None,
              on_progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[str]]:
        """Loads and embeds files batch by batch (bounded memory); returns embeddings and modalities."""
        paths = list(paths)
        embs, mods = [], []
        for start in range(0, len(paths), self.batch_size):
            batch = [self.load(p, modality) for p in paths[start : start + self.batch_size]]
            embs.append(self.encode(batch))
            mods.extend(item.modality for item in batch)
            if on_progress:
                on_progress(len(batch))
        return (torch.cat(embs) if embs else torch.empty(0, self.dim)), mods
