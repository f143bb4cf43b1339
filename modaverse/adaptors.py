"""Per-modality adaptors: ImageBind embeddings -> soft tokens in the LLM's embedding space.

ModaVerse's paper describes one linear layer per modality; its code (and PandaGPT) use a
single shared one, which cannot tell an image from a video. Both are available: the
default gives every modality its own projector, ``shared: true`` reproduces the release.
The projector is built from a LLaVA-style config string: ``linear`` or ``mlp<N>x_gelu``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

from modaverse.config import AdaptorConfig

SHARED = "shared"


def build_projector(spec: str, in_dim: int, out_dim: int) -> nn.Module:
    if spec == "linear":
        return nn.Linear(in_dim, out_dim)
    m = re.fullmatch(r"mlp(\d+)x_gelu", spec)
    if m and int(m.group(1)) >= 1:
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(int(m.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown projector {spec!r}; use 'linear' or 'mlp<N>x_gelu' (e.g. mlp2x_gelu)")


class Adaptors(nn.Module):
    """``forward(modality, [B, in_dim]) -> [B, tokens_per_input, out_dim]``."""

    def __init__(self, modalities: Iterable[str], in_dim: int, out_dim: int,
                 projector: str = "linear", tokens_per_input: int = 1, shared: bool = False):
        super().__init__()
        self.in_dim, self.out_dim, self.tokens = in_dim, out_dim, tokens_per_input
        names = [SHARED] if shared else list(dict.fromkeys(modalities))
        self.projectors = nn.ModuleDict(
            {n: build_projector(projector, in_dim, out_dim * tokens_per_input) for n in names}
        )
        self.modalities = tuple(modalities)

    @classmethod
    def from_config(cls, config: AdaptorConfig, modalities: Iterable[str], in_dim: int, out_dim: int) -> Adaptors:
        return cls(modalities, in_dim, out_dim, config.projector, config.tokens_per_input, config.shared)

    @property
    def shared(self) -> bool:
        return SHARED in self.projectors

    def forward(self, modality: str, embeddings: torch.Tensor) -> torch.Tensor:
        if modality not in self.modalities:
            raise KeyError(f"no adaptor for modality {modality!r} (have: {', '.join(self.modalities)})")
        proj = self.projectors[SHARED if self.shared else modality]
        return proj(embeddings).reshape(embeddings.shape[0], self.tokens, self.out_dim)
