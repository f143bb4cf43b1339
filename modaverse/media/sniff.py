"""Which modality a file holds: by extension, confirmed or refined by its content.

The extension gives a family; the first bytes must agree with it, so a renamed file is
reported as mislabelled instead of failing deep inside a decoder. Containers that can
hold either audio or video (mp4, webm, mkv, ogg, mov) are opened to see which streams
they carry, and arrays (.npy) are told apart by shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from modaverse.core.errors import MediaError

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
VIDEO_EXT = {".mp4", ".webm", ".mkv", ".mov", ".avi"}
AUDIO_EXT = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}
ARRAY_EXT = {".npy", ".csv"}
SUPPORTED = sorted(IMAGE_EXT | VIDEO_EXT | AUDIO_EXT | ARRAY_EXT)


def content_kind(head: bytes) -> str | None:
    """Names the format from a file's first bytes, or None when unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "isobmff"  # mp4, m4a, mov
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # mkv, webm
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return None


#: Which content kinds each extension family may hold.
FAMILY_KINDS = {
    "image": {"png", "jpeg", "gif", "bmp", "webp"},
    "audio": {"wav", "flac", "ogg", "mp3", "isobmff", "matroska"},
    "video": {"isobmff", "matroska", "avi", "ogg"},
    "npy": {"npy"},
}


#: Which file families can hold each modality (an .mp4's sound is audio; a 16-bit PNG is a depth map).
HOLDS: dict[str, set[str]] = {"image": {"image"}, "video": {"video"}, "audio": {"audio", "video"},
                              "depth": {"image", "npy"}, "thermal": {"image", "npy"}, "imu": {"csv", "npy"}}


def check_claim(path: Path, modality: str) -> None:
    """A record's stated modality must be one its file can hold (a WAV is never an image)."""
    family, _ = check_file(path)
    if family not in HOLDS.get(modality, {family}):
        raise MediaError(path, f"labelled {modality}, but the file is {family}")


def family_of(ext: str) -> str:
    if ext in IMAGE_EXT:
        return "image"
    if ext in VIDEO_EXT:
        return "video"
    if ext in AUDIO_EXT:
        return "audio"
    if ext == ".npy":
        return "npy"
    if ext == ".csv":
        return "csv"
    raise ValueError(f"unsupported extension {ext or '(none)'!r}; supported: {' '.join(SUPPORTED)}")


def check_file(path: Path) -> tuple[str, str | None]:
    """Fails with a named reason for missing, empty or mislabelled files; returns (family, kind)."""
    if not path.exists():
        raise MediaError(path, "no such file")
    if path.is_dir():
        raise MediaError(path, "is a directory, not a media file")
    try:
        family = family_of(path.suffix.lower())
    except ValueError as e:
        raise MediaError(path, str(e)) from None
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        raise MediaError(path, "file is empty")
    kind = content_kind(head)
    if family in FAMILY_KINDS and kind not in FAMILY_KINDS[family]:
        what = f"{kind} data" if kind else "not a recognisable file of that type"
        raise MediaError(path, f"mislabelled: the extension says {family} but the content is {what}")
    return family, kind


@contextlib.contextmanager
def decoding(path: str | Path, what: str) -> Iterator[None]:
    """Turns whatever PyAV raises for a truncated or garbage file into one :class:`MediaError`."""
    try:
        yield
    except MediaError:
        raise
    except Exception as e:  # av raises many types for truncated/garbage files
        raise MediaError(path, f"cannot decode {what} ({av_reason(e)})") from None


def av_reason(e: Exception) -> str:
    """FFmpeg's own words for a failure, without the path PyAV repeats after them."""
    return getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"


def container_modality(path: Path) -> str:
    """'video' if the container has a real video stream, else 'audio' if it has sound."""
    import av

    try:
        with av.open(str(path)) as c:
            # Cover art (m4a/mkv) is a one-picture "video" stream flagged attached_pic.
            has_video = any(not (s.disposition & av.stream.Disposition.attached_pic) for s in c.streams.video)
            has_audio = bool(c.streams.audio)
    except Exception as e:  # av raises many types for truncated/garbage files
        raise MediaError(path, f"cannot open container ({av_reason(e)})") from None
    if has_video:
        return "video"
    if has_audio:
        return "audio"
    raise MediaError(path, "container holds neither a video nor an audio stream")


def declared_seconds(container, stream) -> float | None:
    """The duration a file's header promises (stream first, then container), if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def check_complete(path: Path, declared: float | None, decoded: float, slack: float = 0.9) -> None:
    """Refuses a stream that decodes to much less than its header promised (a cut download)."""
    if declared and decoded < slack * declared:
        raise MediaError(path, f"truncated: decodes to {decoded:.2f} s but the header says {declared:.2f} s")
