"""Media files -> the tensors ImageBind's towers read, for all six modalities.

:func:`load_media` is the one entry point: it finds a file's modality (extension, then
content), decodes it with Pillow / soundfile / PyAV / numpy, and reproduces upstream
ImageBind's preprocessing. Every failure is a :class:`~modaverse.core.errors.MediaError` whose
message names the file and the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modaverse.config import MediaConfig
from modaverse.core.errors import MediaError
from modaverse.core.modality import INPUT_SHAPE, MODALITIES
from modaverse.media.audio import load_audio
from modaverse.media.image import load_image
from modaverse.media.sensors import array_shape, load_array, load_depth, load_imu, load_thermal
from modaverse.media.sniff import check_file, container_modality
from modaverse.media.video import load_video


@dataclass(frozen=True)
class MediaInput:
    """One preprocessed file: its modality and the tower input (no batch dimension)."""

    path: str
    modality: str
    tensor: torch.Tensor


def _npy_modality(path: Path) -> str:
    shape = array_shape(path)
    matches = [m for m in MODALITIES if INPUT_SHAPE[m] == shape]
    if not matches and len(shape) == 2 and 6 in shape:
        matches = ["imu"]
    elif not matches and (len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)):
        matches = ["depth", "thermal"]  # a single-channel map of another size
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MediaError(path, f"shape {shape} fits {' and '.join(matches)}; pass --modality to choose")
    raise MediaError(path, f"cannot tell the modality of an array of shape {shape}; pass --modality")


def detect_modality(path: str | Path) -> str:
    """The modality a file holds, from its extension and, where that is ambiguous, its content."""
    path = Path(path)
    family, kind = check_file(path)
    if family == "npy":
        return _npy_modality(path)
    if family == "csv":
        return "imu"
    if family == "image":
        if kind == "png":
            from PIL import Image

            try:
                with warnings.catch_warnings():  # a bomb is the decoder's to report, in one line
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as img:  # reads the header only
                        if img.mode.startswith("I;16"):
                            return "depth"
            except (OSError, Image.DecompressionBombError):
                pass
        return "image"
    if kind in ("isobmff", "matroska", "ogg", "avi"):
        found = container_modality(path)
        if family == "audio" and found == "video":  # an audio-only .mp4 is audio; a video .m4a is not
            raise MediaError(path, "mislabelled: the extension says audio but the file holds a video stream "
                                   "(rename it to .mp4, or pass --modality audio to read its sound)")
        return found
    return family


def input_shape(modality: str, config: MediaConfig) -> tuple[int, ...]:
    """The tower input one file becomes under ``config`` (``INPUT_SHAPE`` is ImageBind's default)."""
    side, a, v = config.image_size, config.audio, config.video
    return {"image": (3, side, side), "depth": (1, side, side), "thermal": (1, side, side), "imu": INPUT_SHAPE["imu"],
            "audio": (a.clips, 1, a.num_mel_bins, a.target_length),
            "video": (v.clips * v.crops, 3, v.frames_per_clip, v.size, v.size)}[modality]


def load_media(path: str | Path, modality: str | None = None, config: MediaConfig | None = None) -> MediaInput:
    """Loads and preprocesses one file; ``modality`` overrides detection."""
    path, config = Path(path), config or MediaConfig()
    if modality is None:
        modality = detect_modality(path)
    else:
        if modality not in MODALITIES:
            raise MediaError(path, f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
        check_file(path)
    if path.suffix.lower() == ".npy":
        arr = load_array(path)
        want = input_shape(modality, config)
        if tuple(arr.shape) == want:
            return MediaInput(str(path), modality, torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
        if modality not in ("depth", "thermal", "imu"):
            raise MediaError(path, f"a {modality} array must have shape {want}, got {tuple(arr.shape)}")
    loaders = {
        "image": lambda: load_image(path, config.image_size, config.max_pixels),
        "video": lambda: load_video(path, config.video),
        "audio": lambda: load_audio(path, config.audio),
        "depth": lambda: load_depth(path, config.image_size, config.depth_scale, config.max_pixels),
        "thermal": lambda: load_thermal(path, config.image_size, config.max_pixels),
        "imu": lambda: load_imu(path),
    }
    return MediaInput(str(path), modality, loaders[modality]())


__all__ = ["MediaConfig", "MediaInput", "detect_modality", "load_media"]
