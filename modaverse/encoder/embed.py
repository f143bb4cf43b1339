"""The frozen input side: files -> ImageBind embeddings, batched per tower.

:class:`Encoder` owns the native ImageBind and the preprocessing settings. It keeps the
callers' order while batching files of the same modality together, which is where the
speed comes from (the research code encodes one sample at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from modaverse.config import EncoderConfig
from modaverse.core.device import DTYPES, pick_device
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import TOWER
from modaverse.encoder.imagebind.checkpoint import load_into, read_state_dict, resolve_weights
from modaverse.encoder.imagebind.config import ImageBindConfig
from modaverse.encoder.imagebind.model import ImageBind
from modaverse.encoder.imagebind.towers import load_towers, tower_files
from modaverse.encoder.text import TextTokenizer
from modaverse.media import MediaConfig, MediaInput, load_media


def build_imagebind(config: ImageBindConfig, weights: Path | None = None, seed: int = 0,
                    towers: Mapping[str, Path] | None = None) -> ImageBind:
    """An ImageBind from a checkpoint file, or with seeded random weights when none is given; then
    the bound towers' own files (``towers``, tower -> file) over it."""
    if weights is None:
        model = ImageBind(config)
        model.init_weights(seed)
    else:
        state = read_state_dict(weights)
        with torch.device("meta"):
            model = ImageBind(config)
        load_into(model, state, str(weights))
    model.tower_meta = load_towers(model, towers or {})
    return model


NO_TOKENIZER = ("the text tower has no tokenizer: set encoder.text_tokenizer to a tokenizers JSON (CLIP's BPE for "
                "imagebind_huge), or load a bound text tower (encoder.tower_weights)")


def text_tokenizer(model: ImageBind, path: str | None = None) -> TextTokenizer | None:
    """The text tower's tokenizer: a file (``encoder.text_tokenizer``), else the one its tower file carries
    (None without either: a text tower about to be trained from scratch)."""
    c = model.config
    if path is not None:
        if not Path(path).is_file():
            raise ModaverseError(f"encoder.text_tokenizer {path}: no such file")
        return TextTokenizer(Path(path).read_text(), c.text_context_length, c.text_vocab_size, path)
    meta = getattr(model, "tower_meta", {}).get("text", {})
    if "tokenizer" not in meta:
        return None
    return TextTokenizer(meta["tokenizer"], c.text_context_length, c.text_vocab_size, "the text tower's tokenizer")


class Encoder:
    """ImageBind plus ImageBind's preprocessing; ``embed`` returns upstream's embeddings."""

    def __init__(self, model: ImageBind, media: MediaConfig = MediaConfig(), *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 8):
        self.model = model.to(device=device, dtype=dtype)
        self.media = media
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, batch_size
        self.tokenizer: TextTokenizer | None = None

    @classmethod
    def from_config(cls, config: EncoderConfig, media: MediaConfig = MediaConfig(), *,
                    text: bool = False) -> Encoder:
        """``text`` builds the text tower too (zero-shot evaluation, binding), whatever the modalities."""
        weights = None
        if config.weights:
            weights = resolve_weights(config.weights, config.weights_url, config.sha256)
        arch = ImageBindConfig.from_encoder(config)
        if text and "text" not in arch.towers:
            arch = arch.model_copy(update={"towers": (*arch.towers, "text")})
        model = build_imagebind(arch, weights, config.seed, tower_files(config.tower_weights))
        encoder = cls(model, media, device=pick_device(config.device), dtype=DTYPES[config.dtype],
                      batch_size=config.batch_size)
        if text:
            encoder.tokenizer = text_tokenizer(model, config.text_tokenizer)
        return encoder

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

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, D]`` text embeddings (needs an encoder built with ``text=True``)."""
        if "text" not in self.model.towers:
            raise ModaverseError("this encoder was built without its text tower (Encoder.from_config(..., text=True))")
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise ModaverseError(NO_TOKENIZER)
        out = []
        for start in range(0, len(texts), self.batch_size * 8):
            tokens = tokenizer(texts[start : start + self.batch_size * 8]).to(self.device)
            out.append(self.model.forward_tower("text", tokens).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

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
