"""Depth, thermal and IMU files. Upstream ships no loaders for these, so the rules are ours.

- depth: 16-bit PNG in millimetres (Kinect/NYU/SUN RGB-D convention), scaled to metres by
  ``depth_scale``; or a float ``.npy``. Resized (shorter side) and centre-cropped to 224.
- thermal: a grayscale image in [0, 1] (8- or 16-bit), or ``.npy``; same geometry.
- IMU: 6 channels (3 accelerometer + 3 gyroscope) from ``.npy`` or ``.csv`` in either
  orientation; a longer recording keeps its central 2000 samples (ImageBind's 10 s window
  at 200 Hz), a shorter one is zero-padded at the end.
Arrays already in the tower's input shape are used unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modaverse.config import MAX_PIXELS
from modaverse.core.errors import MediaError
from modaverse.media.image import open_image, resize_center_crop

IMU_CHANNELS, IMU_LENGTH = 6, 2000


def load_array(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError/EOFError/OSError for bad files
        raise MediaError(path, f"cannot read .npy ({e})") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise MediaError(path, f"array has non-numeric dtype {arr.dtype}")
    return finite(path, arr)


def finite(path: Path, arr: np.ndarray) -> np.ndarray:
    """Sensor values must be numbers: a NaN or Inf would flow through the encoder into the LLM."""
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise MediaError(path, f"holds {int(bad.sum())} NaN or infinite value(s) (first at index {where})")
    return arr


def array_shape(path: Path) -> tuple[int, ...]:
    """The shape from a .npy header (memory-mapped: no data is read)."""
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except Exception as e:  # numpy raises ValueError/EOFError/OSError for bad files
        raise MediaError(path, f"cannot read .npy ({e})") from None


def _map_to_tensor(arr: np.ndarray, size: int) -> torch.Tensor:
    """A 2-D map -> [1, size, size]: shorter side to ``size`` (bilinear), centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, int(h * scale)), max(size, int(w * scale))
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        x = x[..., top : top + size, left : left + size]
    return x[0]


def _single_map(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise MediaError(path, f"expected a single-channel map [H, W] or [1, H, W], got shape {tuple(arr.shape)}")
    return arr


def load_depth(path: Path, size: int = 224, depth_scale: float = 0.001, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    if path.suffix.lower() == ".npy":
        return _map_to_tensor(_single_map(path, load_array(path)), size)
    img = open_image(path, max_pixels)
    if img.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
        raise MediaError(path, f"depth images must be single-channel (16-bit PNG), got mode {img.mode}")
    return _map_to_tensor(np.asarray(img, dtype=np.float32) * depth_scale, size)


def load_thermal(path: Path, size: int = 224, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    if path.suffix.lower() == ".npy":
        return _map_to_tensor(_single_map(path, load_array(path)), size)
    img = open_image(path, max_pixels)
    if img.mode.startswith("I"):  # 16-bit radiometric -> [0, 1]
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return _map_to_tensor(arr, size)
    gray = resize_center_crop(img.convert("L"), size)
    return torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)[None]


def _read_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise MediaError(path, "CSV is not text") from None
    rows = [r for r in (line.strip() for line in text.splitlines()) if r]
    try:
        float(rows[0].split(",")[0])
    except (ValueError, IndexError):
        rows = rows[1:]  # header line
    try:
        arr = np.array([[float(v) for v in r.split(",")] for r in rows], dtype=np.float32)
    except ValueError as e:
        raise MediaError(path, f"CSV holds a non-numeric value ({e})") from None
    return finite(path, arr)


def load_imu(path: Path) -> torch.Tensor:
    arr = _read_csv(path) if path.suffix.lower() == ".csv" else load_array(path)
    if arr.ndim != 2 or IMU_CHANNELS not in arr.shape or arr.size == 0:
        raise MediaError(path, f"IMU data must be [6, N] or [N, 6] (6 channels), got shape {tuple(arr.shape)}")
    if arr.shape[0] != IMU_CHANNELS:
        arr = arr.T
    n = arr.shape[1]
    if n > IMU_LENGTH:
        start = (n - IMU_LENGTH) // 2
        arr = arr[:, start : start + IMU_LENGTH]
    elif n < IMU_LENGTH:
        arr = np.pad(arr, ((0, 0), (0, IMU_LENGTH - n)))
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


