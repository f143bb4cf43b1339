"""ImageBind architecture as data: the upstream constructor's keyword arguments.

Field names are exactly ``ImageBindModel.__init__``'s, so a JSON of upstream kwargs (such
as a fixture's ``config.json``) validates as is. Named architectures live as JSON files in
``configs/imagebind/`` (package data) and are listed by :func:`~modaverse.config.list_archs`, open_clip style.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modaverse.config import EncoderConfig, arch_file, list_archs
from modaverse.core.modality import TOWER

#: ImageBind tower names; "vision" serves both images and videos.
TOWER_NAMES = ("vision", "text", "audio", "depth", "thermal", "imu")


class ImageBindConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    video_frames: int = 2
    kernel_size: tuple[int, int, int] = (2, 14, 14)
    out_embed_dim: int = 768
    vision_embed_dim: int = 1024
    vision_num_blocks: int = 24
    vision_num_heads: int = 16
    audio_kernel_size: int = 16
    audio_stride: int = 10
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    audio_drop_path: float = 0.1
    text_embed_dim: int = 768
    text_num_blocks: int = 12
    text_num_heads: int = 12
    depth_embed_dim: int = 384
    depth_kernel_size: int = 16
    depth_num_blocks: int = 12
    depth_num_heads: int = 8
    depth_drop_path: float = 0.0
    thermal_embed_dim: int = 768
    thermal_kernel_size: int = 16
    thermal_num_blocks: int = 12
    thermal_num_heads: int = 12
    thermal_drop_path: float = 0.0
    imu_embed_dim: int = 512
    imu_kernel_size: int = 8
    imu_num_blocks: int = 6
    imu_num_heads: int = 8
    imu_drop_path: float = 0.7
    # Not upstream kwargs: upstream hard-codes these. Drop-path rates above act only on towers
    # opted into training (``modaverse bind``); inference runs in eval mode.
    image_size: int = Field(224, description="side of the square image, depth and thermal inputs (and video frames)")
    text_vocab_size: int = 49408
    text_context_length: int = 77
    towers: tuple[str, ...] = Field(default=TOWER_NAMES, description="towers to build")

    @field_validator("towers")
    @classmethod
    def _known_towers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if t not in TOWER_NAMES]
        if bad:
            raise ValueError(f"unknown tower(s) {bad}; choose from {list(TOWER_NAMES)}")
        return tuple(dict.fromkeys(v))

    @classmethod
    def from_name(cls, name: str, **overrides) -> ImageBindConfig:
        path = arch_file(name)
        if not path.is_file():
            raise KeyError(f"unknown ImageBind architecture {name!r}; known: {', '.join(list_archs())}")
        return cls(**{**json.loads(path.read_text()), **overrides})

    @classmethod
    def from_encoder(cls, config: EncoderConfig) -> ImageBindConfig:
        """The architecture an ``encoder:`` section asks for, with only the towers its modalities read."""
        towers = tuple(dict.fromkeys(TOWER[m] for m in config.modalities))
        return cls.from_name(config.arch, **config.kwargs, towers=towers)
