"""Writes small media files of every supported format, for the loader tests."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def image(path: Path, size=(96, 64)) -> Path:
    arr = (RNG.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if path.suffix == ".gif":
        second = Image.fromarray(255 - arr)
        img.save(path, save_all=True, append_images=[second], duration=100)
    else:
        img.save(path)
    return path


def tone(seconds=1.5, sr=16000, channels=1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


def audio(path: Path, seconds=1.5, sr=16000, channels=1) -> Path:
    data = tone(seconds, sr, channels)
    if path.suffix in (".wav", ".flac", ".ogg", ".mp3"):
        import soundfile as sf

        sf.write(path, data, sr, format={".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix),
                 subtype={".ogg": "OPUS", ".mp3": "MPEG_LAYER_III"}.get(path.suffix))
        return path
    return _encode_av(path, audio_data=data, sr=sr)


VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def video(path: Path, frames=30, fps=15, size=(80, 48), with_audio=False) -> Path:
    return _encode_av(path, frames=frames, fps=fps, size=size,
                      audio_data=tone(frames / fps, 16000) if with_audio else None, sr=16000, video=True)


def _encode_av(path, frames=0, fps=15, size=(80, 48), audio_data=None, sr=16000, video=False) -> Path:
    import av

    with av.open(str(path), "w") as out:
        vs = a = None
        if video:  # every stream must exist before the first packet is muxed
            vs = out.add_stream(VIDEO_CODECS[path.suffix], rate=fps)
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        if audio_data is not None:
            codec = {".webm": "libopus"}.get(path.suffix, "aac")
            rate = 48000 if codec == "libopus" else sr
            a = out.add_stream(codec, rate=rate, layout="mono")
        if vs is not None:
            for i in range(frames):
                arr = np.zeros((size[1], size[0], 3), np.uint8)
                arr[:, : (i * 3) % size[0]] = (255, 64, 0)
                arr[..., 2] = i * 8 % 256
                out.mux(vs.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
            out.mux(vs.encode())
        if a is not None:
            mono = audio_data[:, 0]
            if rate != sr:
                mono = np.interp(np.arange(int(len(mono) * rate / sr)) * sr / rate, np.arange(len(mono)), mono)
            frame = av.AudioFrame.from_ndarray(mono[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
            out.mux(a.encode(frame))
            out.mux(a.encode())
    return path


def depth_png(path: Path, size=(120, 90)) -> Path:
    arr = (np.linspace(500, 4000, size[0] * size[1]).reshape(size[1], size[0])).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return path


def thermal_png(path: Path, size=(100, 80)) -> Path:
    Image.fromarray((RNG.random((size[1], size[0])) * 255).astype(np.uint8), mode="L").save(path)
    return path


def imu_csv(path: Path, n=2500, header=True) -> Path:
    data = RNG.standard_normal((n, 6)).astype(np.float32)
    lines = (["ax,ay,az,gx,gy,gz"] if header else []) + [",".join(f"{v:.5f}" for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def png_declaring(path, width: int, height: int) -> None:
    """A valid PNG header and a few bytes of data, declaring ``width`` x ``height`` 1-bit pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def jpeg_declaring(path, width: int, height: int) -> None:
    """A small real JPEG whose SOF header is rewritten to declare ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
