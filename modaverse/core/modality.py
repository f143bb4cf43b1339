"""The six input modalities: which ImageBind tower reads each, and their marker tokens.

Images and videos share the vision tower but stay distinct modalities everywhere else
(own adaptor, own markers), so the LLM can tell a photo from a clip, which the official
ModaVerse code cannot.
"""

from __future__ import annotations

from typing import Literal, get_args

Modality = Literal["image", "video", "audio", "depth", "thermal", "imu"]
MODALITIES: tuple[str, ...] = get_args(Modality)

#: Marks where an input goes in an instruction's text (inputs without one precede the text).
PLACEHOLDER = "<media>"

#: The ImageBind tower that encodes each modality.
TOWER: dict[str, str] = {
    "image": "vision",
    "video": "vision",
    "audio": "audio",
    "depth": "depth",
    "thermal": "thermal",
    "imu": "imu",
}

#: Per-file model input shape (no batch dim) with ImageBind's default preprocessing.
INPUT_SHAPE: dict[str, tuple[int, ...]] = {
    "image": (3, 224, 224),
    "video": (15, 3, 2, 224, 224),
    "audio": (3, 1, 128, 204),
    "depth": (1, 224, 224),
    "thermal": (1, 224, 224),
    "imu": (6, 2000),
}


def markers(modality: str) -> tuple[str, str]:
    """The opening and closing marker tokens that wrap a modality's soft tokens."""
    name = modality.capitalize() if modality != "imu" else "IMU"
    return f"<{name}>", f"</{name}>"


def check_modality(name: str) -> str:
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; choose from {', '.join(MODALITIES)}")
    return name
