"""Output files: PNG images, MP4 (H.264) or WebM (VP9) videos, WAV audio, each with a JSON sidecar.

Videos are encoded with PyAV (FFmpeg bundled in its wheel), so no system ffmpeg and no
torchvision are needed. Every file is written atomically under a generated name, so a
failed or interrupted render never leaves half a file and never overwrites another.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from modaverse.core.atomic import write_atomic, write_json_atomic

VIDEO_CODECS = {"mp4": ("libx264", "yuv420p"), "webm": ("libvpx-vp9", "yuv420p")}


def new_path(out_dir: Path, stem: str, suffix: str) -> Path:
    """A fresh name in out_dir: ``<stem>-<8 hex>.<suffix>`` (never an existing file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        path = out_dir / f"{stem}-{uuid.uuid4().hex[:8]}.{suffix}"
        if not path.exists():
            return path


def write_png(image, out_dir: Path, stem: str) -> Path:
    path = new_path(out_dir, stem, "png")
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def _uint8_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return arr


def write_video(frames, out_dir: Path, stem: str, fps: float = 8, fmt: str = "mp4") -> Path:
    """``frames``: [T, H, W, 3] floats in [0, 1] or uint8."""
    if fmt not in VIDEO_CODECS:
        raise ValueError(f"unknown video format {fmt!r}; use {' or '.join(VIDEO_CODECS)}")
    path = new_path(out_dir, stem, fmt)
    encode_video(path, frames, fps, fmt)
    return path


def encode_video(path: Path, frames, fps: float = 8, fmt: str = "mp4") -> None:
    """Encodes ``frames`` to exactly ``path``, atomically."""
    import av

    if fmt not in VIDEO_CODECS:
        raise ValueError(f"unknown video format {fmt!r}; use {' or '.join(VIDEO_CODECS)}")
    arr = _uint8_frames(frames)
    codec, pix_fmt = VIDEO_CODECS[fmt]
    h, w = arr.shape[1] - arr.shape[1] % 2, arr.shape[2] - arr.shape[2] % 2  # yuv420p needs even sizes

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=fmt) as container:
            # One encoder thread (and one lookahead thread): x264's threads make the bytes depend on timing.
            # Its SIMD paths too: with them about one encode in 40 of the same frames came out different
            # (frames off by up to 40 levels), so a seeded synthetic set was not reproducible.
            opts = {"x264-params": "threads=1:lookahead-threads=1:asm=0"} if codec == "libx264" else {}
            stream = container.add_stream(codec, rate=round(fps), options=opts)
            stream.thread_count = 1
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            for frame in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame[:h, :w], format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    write_atomic(path, encode)


def write_wav(audio, out_dir: Path, stem: str, sample_rate: int = 16000, fmt: str = "wav") -> Path:
    """``wav``: peak-normalised 16-bit PCM; ``wav-float``: the generator's float samples as they are."""
    if fmt not in ("wav", "wav-float"):
        raise ValueError(f"unknown audio format {fmt!r}; use wav or wav-float")
    path = new_path(out_dir, stem, "wav")
    encode_wav(path, audio, sample_rate, fmt)
    return path


def encode_wav(path: Path, audio, sample_rate: int = 16000, fmt: str = "wav") -> None:
    """Writes exactly ``path``, atomically."""
    import soundfile as sf

    data = np.asarray(audio, dtype=np.float32).reshape(-1)
    if fmt == "wav":
        peak = float(np.abs(data).max()) if data.size else 0.0
        data, subtype = (data / peak * 0.99 if peak > 0 else data), "PCM_16"
    elif fmt == "wav-float":
        subtype = "FLOAT"
    else:
        raise ValueError(f"unknown audio format {fmt!r}; use wav or wav-float")
    write_atomic(path, lambda tmp: sf.write(str(tmp), data, sample_rate, subtype=subtype, format="WAV"))


def write_sidecar(path: Path, info: dict) -> Path:
    side = path.with_suffix(path.suffix + ".json")
    write_json_atomic(side, info)
    return side
