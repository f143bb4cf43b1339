"""Per-modality adaptors: ImageBind embeddings -> soft tokens in the LLM's embedding space.

ModaVerse's paper describes one linear layer per modality; its code (and PandaGPT) use a
single shared one, which cannot tell an image from a video. Both are available: the
default gives every modality its own projector, ``shared: true`` reproduces the release.
The projector is built from a LLaVA-style config string: ``linear``, ``mlp<N>x_gelu`` or
``mlp<N>x_gelu_tokenwise``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from modaverse.config import AdaptorConfig

SHARED = "shared"


def build_projector(spec: str, in_dim: int, out_dim: int, tokens: int = 1) -> nn.Module:
    """``[B, in_dim] -> [B, tokens * out_dim]``. ``mlpNx_gelu`` is LLaVA's: every layer is
    ``tokens * out_dim`` wide. ``mlpNx_gelu_tokenwise`` widens only the first layer into ``tokens``
    tokens and applies the rest to each token alone, so more tokens cost a first layer's width, not
    the square of it (at 4 tokens into SmolLM2's 576: 0.5 M parameters a modality instead of 5.6 M)."""
    if spec == "linear":
        return nn.Linear(in_dim, out_dim * tokens)
    m = re.fullmatch(r"mlp(\d+)x_gelu(_tokenwise)?", spec)
    if m and int(m.group(1)) >= 1:
        width = out_dim if m.group(2) else out_dim * tokens
        rest: list[nn.Module] = []
        for _ in range(int(m.group(1)) - 1):
            rest += [nn.GELU(), nn.Linear(width, width)]
        if m.group(2):
            return TokenwiseMLP(nn.Linear(in_dim, out_dim * tokens), nn.Sequential(*rest), tokens)
        return nn.Sequential(nn.Linear(in_dim, width), *rest)
    raise ValueError(f"unknown projector {spec!r}; use 'linear', 'mlp<N>x_gelu' (e.g. mlp2x_gelu) or "
                     "'mlp<N>x_gelu_tokenwise'")


class TokenwiseMLP(nn.Module):
    """A first layer that makes ``tokens`` tokens, then layers shared by every token."""

    def __init__(self, first: nn.Linear, rest: nn.Sequential, tokens: int):
        super().__init__()
        self.first, self.rest, self.tokens = first, rest, tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(x).unflatten(-1, (self.tokens, -1))).flatten(-2)


class Standardize(nn.Module):
    """Per-dimension standardisation with statistics fitted on the training features.

    A random or small encoder can place all inputs of a modality in a narrow cone (cosine
    0.99 between any two images), so the differences that matter are tiny next to the
    shared mean. Subtracting the mean and dividing by the spread makes them visible to the
    projector. The statistics are buffers: fitted once before training, saved with the
    adaptors, identity until fitted.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        if len(x) < 2:
            return
        x = x.float()
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Adaptors(nn.Module):
    """``forward(modality, [B, in_dim]) -> [B, tokens_per_input, out_dim]``."""

    def __init__(self, modalities: Iterable[str], in_dim: int, out_dim: int,
                 projector: str = "linear", tokens_per_input: int = 1, shared: bool = False,
                 standardize: bool = False):
        super().__init__()
        self.in_dim, self.out_dim, self.tokens = in_dim, out_dim, tokens_per_input
        names = [SHARED] if shared else list(dict.fromkeys(modalities))
        self.projectors = nn.ModuleDict(
            {n: build_projector(projector, in_dim, out_dim, tokens_per_input) for n in names}
        )
        self.modalities = tuple(modalities)
        self.standardizers = nn.ModuleDict({m: Standardize(in_dim) for m in self.modalities}) if standardize else None

    @classmethod
    def from_config(cls, config: AdaptorConfig, modalities: Iterable[str], in_dim: int, out_dim: int) -> Adaptors:
        return cls(modalities, in_dim, out_dim, config.projector, config.tokens_per_input, config.shared,
                   config.standardize)

    def fit(self, features: torch.Tensor, modalities: Iterable[str]) -> None:
        """Fits the standardisation statistics (when enabled) on training features, per modality."""
        if self.standardizers is None:
            return
        modalities = list(modalities)
        for m, std in self.standardizers.items():
            idx = [i for i, x in enumerate(modalities) if x == m]
            std.fit(features[idx])

    @torch.no_grad()
    def match_scale(self, target_norm: float, features: torch.Tensor | None = None,
                    modalities: Iterable[str] = (), seed: int = 0) -> None:
        """Rescales each projector's last layer so its soft tokens start at ``target_norm``, the
        mean norm of the LLM's text embeddings.

        Without this, media tokens start wherever the projector's init puts them: norm 1.2
        against about 26 for Gemma's text tokens (which scale embeddings by sqrt(hidden)), so
        the LLM barely sees them at first. Training calibrates on its own features; with none,
        a probe of each modality's input stands in: unit-variance per dimension when
        standardised, else ImageBind's output norm for that modality's tower.
        """
        from modaverse.core.modality import TOWER
        from modaverse.encoder.imagebind.model import OUTPUT_SCALE

        modalities = list(modalities)
        if features is None:
            gen = torch.Generator().manual_seed(seed)
            modalities = [m for m in self.modalities for _ in range(64)]
            features = torch.randn(len(modalities), self.in_dim, generator=gen)
            if self.standardizers is None:
                norms = torch.tensor([OUTPUT_SCALE[TOWER[m]] for m in modalities])
                features = features / features.norm(dim=-1, keepdim=True) * norms[:, None]
            else:  # raw features the fitted standardisers turn into exactly this unit-variance probe
                features = torch.stack([self.standardizers[m].mean + self.standardizers[m].std * f
                                        for m, f in zip(modalities, features, strict=True)])
        param = next(self.parameters())
        for name, proj in self.projectors.items():
            mods = [m for m in dict.fromkeys(modalities) if name in (SHARED, m)]
            if not mods:
                continue
            out = torch.cat([self(m, features[[i for i, x in enumerate(modalities) if x == m]].to(param.device, param.dtype))
                             for m in mods])
            norm = float(out.float().norm(dim=-1).mean())
            last = [m for m in proj.modules() if isinstance(m, nn.Linear)][-1]
            if norm > 0:
                last.weight.mul_(target_norm / norm)
                last.bias.mul_(target_norm / norm)

    @property
    def shared(self) -> bool:
        return SHARED in self.projectors

    def forward(self, modality: str, embeddings: torch.Tensor) -> torch.Tensor:
        if modality not in self.modalities:
            raise KeyError(f"no adaptor for modality {modality!r} (have: {', '.join(self.modalities)})")
        if self.standardizers is not None:
            embeddings = self.standardizers[modality](embeddings)
        return self.projector(modality)(embeddings).reshape(embeddings.shape[0], self.tokens, self.out_dim)

    def projector(self, modality: str) -> nn.Module:
        return self.projectors[SHARED if self.shared else modality]

    def project(self, features: torch.Tensor, modalities: Sequence[str]) -> torch.Tensor:
        """``[N, D]`` features -> ``[N, tokens_per_input, H]``, each row through its modality's adaptor.

        The one projection path: training calls it on a batch, inference on a request's inputs.
        Rows of one modality go through their projector together, then return to input order.
        """
        param = next(self.parameters())
        features = features.to(param.device, param.dtype)
        order, parts = [], []
        for m in dict.fromkeys(modalities):
            idx = [i for i, x in enumerate(modalities) if x == m]
            order += idx
            parts.append(self(m, features[idx]))
        out = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return out[inverse.to(out.device)]
