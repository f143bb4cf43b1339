"""ImageBind in plain PyTorch, key-for-key compatible with the official checkpoint.

The upstream package cannot be installed on a CPU-only stack (it needs CUDA builds of
torchvision/torchaudio and a git pytorchvideo), so the six towers are re-expressed here
with nothing but ``torch.nn``. Module nesting mirrors upstream exactly, because the
official ``imagebind_huge.pth`` is loaded with strict key matching: attribute names such
as ``rgbt_stem.proj.1`` or ``modality_heads.imu.3`` are checkpoint layout, not style.

The encoder is a frozen feature extractor by default: it is built in eval mode, its
parameters never require grad, and ``train()`` cannot switch it out of eval. Binding a tower
(``modaverse bind``) opts that tower alone into training with :meth:`ImageBind.unfreeze`:
only then do its DropPath and dropout act, at the rates upstream configures per tower.
Neither has parameters, so the checkpoint layout is the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from modaverse.encoder.imagebind.config import ImageBindConfig


class PadIm2Video(nn.Module):
    """Turns an image into a two-frame "video" so one Conv3d stem serves both."""

    def __init__(self, ntimes: int):
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class PatchStem(nn.Module):
    """Patchify + optional LayerNorm; ``proj`` is a Sequential only when upstream's is."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module | None = None):
        super().__init__()
        self.proj = nn.Sequential(*layers) if len(layers) > 1 else layers[0]
        if norm is not None:
            self.norm_layer = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if x.ndim > 3:  # conv output B C (T) H W -> B (T)HW C
            x = x.flatten(2).transpose(1, 2)
        if hasattr(self, "norm_layer"):
            x = self.norm_layer(x)
        return x


class PosEmbed(nn.Module):
    """Holds the learnable positional table under upstream's ``pos_embedding_helper`` name."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))


class PatchPreprocessor(nn.Module):
    """Stem + class token + positional embedding, for vision/audio/depth/thermal.

    ``stem_name`` is ``rgbt_stem`` or ``depth_stem`` because the checkpoint says so.
    """

    def __init__(self, stem: PatchStem, num_patches: int, dim: int, stem_name: str = "rgbt_stem"):
        super().__init__()
        self.stem_name = stem_name
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        setattr(self, stem_name, stem)
        self.pos_embedding_helper = PosEmbed(num_patches + 1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = getattr(self, self.stem_name)(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if pos.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"input gives {tokens.shape[1]} tokens but the positional table has {pos.shape[1]}; "
                "inputs must have the size the tower was built for"
            )
        return tokens + pos


class TextPreprocessor(nn.Module):
    def __init__(self, vocab_size: int, context_length: int, dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, dim))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("mask", mask)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens) + self.pos_embed


class IMUPreprocessor(nn.Module):
    def __init__(self, channels: int, length: int, kernel_size: int, dim: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.pos_embed = nn.Parameter(torch.zeros(1, length // kernel_size + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.imu_stem = PatchStem(
            [nn.Linear(channels * kernel_size, dim, bias=False)], nn.LayerNorm(dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, L] -> [B, L/k, C*k]: each token is one k-sample window of all channels.
        x = x.unfold(-1, self.kernel_size, self.kernel_size).permute(0, 2, 1, 3)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        tokens = self.imu_stem(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.pos_embed


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample while training (sequence-first input)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(1, x.shape[1], *([1] * (x.ndim - 2))).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block; sequence-first like upstream's nn.MultiheadAttention use."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, pre_ln: bool, add_bias_kv: bool, drop_path: float = 0.0):
        super().__init__()
        # Upstream's slot 1 is a parameter-free rearrange; only slot 0 reaches the checkpoint.
        self.pre_transformer_layer = nn.Sequential(
            nn.LayerNorm(dim, eps=1e-6) if pre_ln else nn.Identity()
        )
        # upstream's rates grow linearly with depth, from 0 at the first block to drop_path at the last
        rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [0.0]
        self.blocks = nn.ModuleList(Block(dim, heads, add_bias_kv, drop_path=r) for r in rates)

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)  # B L D -> L B D
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x.transpose(0, 1)


class SelectToken(nn.Module):
    def __init__(self, index: int = 0):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index, ...]


class TextHead(nn.Module):
    """LayerNorm + projection of the end-of-text token (the largest id in each row)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1, p=2)


class LogitScale(nn.Module):
    """Multiplies by exp(log_logit_scale), capped at 100; a buffer when not learnable."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0):
        super().__init__()
        value = torch.ones([]) * math.log(init)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)
        self.max_scale = max_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=self.max_scale) * x


def _head(dim: int, out_dim: int, dropout: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(dim, eps=1e-6), SelectToken(0)]
    if dropout:  # the IMU head's Dropout(0.5) occupies slot 2 in the checkpoint
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


#: Upstream's fixed output scale of each tower's embeddings (after L2 normalisation); vision is
#: left unit-norm. Consumers such as the adaptors' initial scaling read it from here.
OUTPUT_SCALE: dict[str, float] = {"vision": 1.0, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}


def _post(scale: float | None, learnable: bool = False) -> nn.Module:
    if scale is None:
        return Normalize()
    return nn.Sequential(Normalize(), LogitScale(scale, learnable))


class ImageBind(nn.Module):
    """The six-tower ImageBind encoder (only the towers in ``config.towers`` are built)."""

    def __init__(self, config: ImageBindConfig):
        super().__init__()
        self.config = c = config
        pre, trunks, heads, post = {}, {}, {}, {}
        towers = set(c.towers)
        if "vision" in towers:
            k = tuple(c.kernel_size)
            conv = nn.Conv3d(3, c.vision_embed_dim, kernel_size=k, stride=k, bias=False)
            n = (c.video_frames // k[0]) * (c.image_size // k[1]) * (c.image_size // k[2])
            pre["vision"] = PatchPreprocessor(
                PatchStem([PadIm2Video(c.video_frames), conv]), n, c.vision_embed_dim
            )
            trunks["vision"] = Trunk(
                c.vision_embed_dim, c.vision_num_blocks, c.vision_num_heads, True, False
            )
            heads["vision"] = _head(c.vision_embed_dim, c.out_embed_dim)
            post["vision"] = _post(None)
        if "text" in towers:
            pre["text"] = TextPreprocessor(c.text_vocab_size, c.text_context_length, c.text_embed_dim)
            trunks["text"] = Trunk(c.text_embed_dim, c.text_num_blocks, c.text_num_heads, False, False)
            heads["text"] = TextHead(c.text_embed_dim, c.out_embed_dim)
            post["text"] = _post(1 / 0.07, learnable=True)
        if "audio" in towers:
            ks, st, d = c.audio_kernel_size, c.audio_stride, c.audio_embed_dim
            conv = nn.Conv2d(1, d, kernel_size=ks, stride=st, bias=False)
            n = ((c.audio_num_mel_bins - ks) // st + 1) * ((c.audio_target_len - ks) // st + 1)
            pre["audio"] = PatchPreprocessor(PatchStem([conv], nn.LayerNorm(d)), n, d)
            trunks["audio"] = Trunk(d, c.audio_num_blocks, c.audio_num_heads, False, True, c.audio_drop_path)
            heads["audio"] = _head(d, c.out_embed_dim)
            post["audio"] = _post(OUTPUT_SCALE["audio"])
        for name, stem_name in (("depth", "depth_stem"), ("thermal", "rgbt_stem")):
            if name not in towers:
                continue
            d, ks = getattr(c, f"{name}_embed_dim"), getattr(c, f"{name}_kernel_size")
            conv = nn.Conv2d(1, d, kernel_size=ks, stride=ks, bias=False)
            n = (c.image_size // ks) ** 2
            pre[name] = PatchPreprocessor(PatchStem([conv], nn.LayerNorm(d)), n, d, stem_name)
            trunks[name] = Trunk(d, getattr(c, f"{name}_num_blocks"), getattr(c, f"{name}_num_heads"), False,
                                 True, getattr(c, f"{name}_drop_path"))
            heads[name] = _head(d, c.out_embed_dim)
            post[name] = _post(OUTPUT_SCALE[name])
        if "imu" in towers:
            d = c.imu_embed_dim
            pre["imu"] = IMUPreprocessor(6, 2000, c.imu_kernel_size, d)
            trunks["imu"] = Trunk(d, c.imu_num_blocks, c.imu_num_heads, False, True, c.imu_drop_path)
            heads["imu"] = _head(d, c.out_embed_dim, dropout=True)
            post["imu"] = _post(OUTPUT_SCALE["imu"])
        self.modality_preprocessors = nn.ModuleDict(pre)
        self.modality_trunks = nn.ModuleDict(trunks)
        self.modality_heads = nn.ModuleDict(heads)
        self.modality_postprocessors = nn.ModuleDict(post)
        self.unfrozen: tuple[str, ...] = ()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ImageBind:
        """Only unfrozen towers train; every other part stays a frozen feature extractor in eval."""
        super().train(False)
        for tower in self.unfrozen:
            for group in (self.modality_preprocessors, self.modality_trunks, self.modality_heads,
                          self.modality_postprocessors):
                group[tower].train(mode)
        return self

    def unfreeze(self, towers: Iterable[str]) -> ImageBind:
        """Opts towers into training (``modaverse bind``): their parameters require grad, and in
        ``train()`` their DropPath and dropout act. A fixed logit scale stays a buffer, as upstream's."""
        towers = tuple(towers)
        for tower in towers:
            if tower not in self.modality_trunks:
                raise KeyError(f"tower {tower!r} was not built (built: {', '.join(self.towers)})")
        self.unfrozen = towers
        self.requires_grad_(False)
        for name, p in self.named_parameters():
            if name.startswith(tower_prefixes(towers)):
                p.requires_grad_(True)
        return self.train(self.training)

    @property
    def towers(self) -> tuple[str, ...]:
        return tuple(self.modality_trunks.keys())

    def init_weights(self, seed: int) -> None:
        """Deterministic random weights for the offline profile (no checkpoint at hand)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in self.modules():
                reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
                if reset is not None and m is not self:
                    reset()
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if name.endswith(("cls_token", "pos_embed")):
                        nn.init.normal_(p, std=0.02)

    def forward_tower(self, tower: str, x: torch.Tensor, *, stages: dict | None = None) -> torch.Tensor:
        """Embeds one batch through one tower, as upstream's ``forward({tower: x})[tower]``.

        Inputs with 5+ dims carry a clip/crop axis at dim 1 that is folded into the batch
        and averaged after normalisation, exactly like upstream. ``stages`` (if given)
        receives the intermediate activations, for debugging and the port's tests.
        """
        if tower not in self.modality_trunks:
            raise KeyError(f"tower {tower!r} was not built (built: {', '.join(self.towers)})")
        reduce = x.ndim >= 5
        if reduce:
            b, s = x.shape[:2]
            x = x.reshape(b * s, *x.shape[2:])
        tokens = self.modality_preprocessors[tower](x)
        mask = self.modality_preprocessors[tower].mask if tower == "text" else None
        feats = self.modality_trunks[tower](tokens, attn_mask=mask)
        head = self.modality_heads[tower]
        out = head(feats, x) if tower == "text" else head(feats)
        if stages is not None:
            stages.update(trunk_input=tokens, trunk_output=feats, head_output=out)
        out = self.modality_postprocessors[tower](out)
        if reduce:
            out = out.reshape(b, s, -1).mean(dim=1)
        return out

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {tower: self.forward_tower(tower, x) for tower, x in inputs.items()}


def tower_prefixes(towers: Iterable[str]) -> tuple[str, ...]:
    """State-dict prefixes that belong to the given towers."""
    groups = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")
    towers = tuple(towers)
    return tuple(f"{g}.{t}." for g in groups for t in towers)
