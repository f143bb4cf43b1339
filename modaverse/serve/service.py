"""The one assistant a server shares between its web demo and its REST API.

Why a service object: the pipeline is built once, at start-up (never at import), and
holds one model that runs one request at a time. Requests wait in a bounded queue; when
``queue_size`` are already waiting, the next is refused at once (:class:`Busy`, HTTP 503)
rather than piling up. Each request renders into a folder named by 128 random bits, so one
client's outputs cannot be found by guessing URLs. A request that fails raises inside its
own call only: the model, the lock and the queue are left as they were.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.core.modality import MODALITIES
from modaverse.media.sniff import SUPPORTED

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


#: Media types of the files generators write (and of what the chat shows).
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".mp4": "video/mp4", ".webm": "video/webm",
               ".wav": "audio/wav", ".flac": "audio/flac", ".gif": "image/gif"}


class Busy(ModaverseError):
    """The queue is full; the client should retry later (HTTP 503)."""


class UploadError(ModaverseError):
    """An upload refused before any model work, with the HTTP status that says why."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may send and how many may wait; the ``serve`` flags set them."""

    max_upload_mb: float = 50.0
    max_files: int = 8
    queue_size: int = 8

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class Settings:
    """Per-request generation settings (``None`` keeps the config's)."""

    temperature: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    constrained: bool | None = None


@dataclass
class Result:
    id: str
    turn: object  # modaverse.pipeline.assistant.Turn
    folder: Path
    queued_s: float


def safe_name(name: str) -> str:
    """A client's file name reduced to a plain, non-hidden base name (its extension kept)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "upload").name).lstrip("._") or "upload"
    return base[-100:]


def check_uploads(uploads: list[tuple[str, int, str | None]], limits: Limits) -> None:
    """Refuses what is clearly not a request's inputs before any is read or saved: too many or too
    large files (413), unknown types (415) or modalities (422). ``uploads``: (name, bytes, modality)."""
    if len(uploads) > limits.max_files:
        raise UploadError(f"{len(uploads)} files: at most {limits.max_files} per request", 413)
    for name, size, modality in uploads:
        if size > limits.max_upload_bytes:
            raise UploadError(f"{name}: {size / 1048576:.1f} MB is over the {limits.max_upload_mb:g} MB upload limit",
                              413)
        ext = Path(name or "").suffix.lower()
        if ext not in SUPPORTED:
            raise UploadError(f"{name}: unsupported file type {ext or '(no extension)'!r}; "
                              f"supported: {' '.join(SUPPORTED)}", 415)
        if modality is not None and modality not in MODALITIES:
            raise UploadError(f"{name}: unknown modality {modality!r}; choose from {', '.join(MODALITIES)}", 422)


class Service:
    """One pipeline, one request at a time, at most ``limits.queue_size`` waiting."""

    def __init__(self, pipe, outputs: Path, limits: Limits | None = None):
        self.pipe, self.outputs, self.limits = pipe, Path(outputs), limits or Limits()
        limits = self.limits
        self.outputs.mkdir(parents=True, exist_ok=True)
        self._run = threading.Lock()
        # Decoding happens on one thread: malloc keeps a freed 200 MB image buffer in the arena of the
        # thread that used it, so decodes spread over the server's 40 worker threads left one in each.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modaverse-decode")
        self._slots = threading.BoundedSemaphore(limits.queue_size + 1)  # the running one + those waiting
        self._count = threading.Lock()
        self.waiting = 0
        self.served = 0
        self.started = time.time()

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(self.pipe.capabilities)

    def status(self) -> dict:
        return {"status": "ok", "config": self.pipe.config.name, "capabilities": list(self.capabilities),
                "modalities": list(self.pipe.encoder.modalities), "queue": {"waiting": self.waiting,
                "size": self.limits.queue_size}, "served": self.served,
                "uptime_s": round(time.time() - self.started, 1)}

    def _decode(self, files: list[tuple[Path, str | None]]) -> list:
        """Decodes uploads that passed :func:`check_uploads`; a file that is not what it claims is a 422
        naming it and why. Called only inside the run lock: decoding is the step that costs memory
        (an image up to ``media.max_pixels``), so at most one request's files are decoded at once."""
        items = []
        for path, modality in files:
            try:
                items.append(self.pipe.encoder.load(path, modality))
            except ModaverseError as e:  # undecodable, mislabelled, or a modality this config has no tower for
                raise UploadError(str(e).replace(str(path.parent) + "/", ""), 422) from None
        return items

    def generate(self, instruction: str, files: list[tuple[Path, str | None]], history: list | None = None,
                 settings: Settings | None = None) -> Result:
        """Runs one request when its turn comes; :class:`Busy` at once when the queue is full.

        ``files`` are saved uploads (path, modality or None), decoded when the request's turn comes,
        never before: a burst of uploads waits as bytes on disk, not as decoded pixels in memory."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"the server is busy ({self.limits.queue_size} requests waiting); retry shortly")
        settings = settings or Settings()
        try:
            with self._count:
                self.waiting += 1
            t = time.perf_counter()
            with self._run:
                with self._count:
                    self.waiting -= 1
                queued = time.perf_counter() - t
                inputs = self._decoder.submit(self._decode, files).result()
                rid = secrets.token_hex(16)
                folder = self.outputs / rid
                try:
                    turn = self.pipe(instruction, inputs, history or [], output_dir=folder,
                                     temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                                     seed=settings.seed, constrained=settings.constrained)
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                self.served += 1
            return Result(rid, turn, folder, queued)
        finally:
            self._slots.release()

    def output_path(self, rid: str, name: str) -> Path | None:
        """The file behind ``/v1/outputs/{rid}/{name}``, or None: only generated files, never a path escape."""
        if not ID_PATTERN.fullmatch(rid) or not NAME_PATTERN.fullmatch(name):
            return None
        path = (self.outputs / rid / name).resolve()  # a link inside the folder must not lead out of it
        root = self.outputs.resolve()
        return path if path.is_file() and path.parent.parent == root else None


def upload_folder() -> tempfile.TemporaryDirectory:
    """Where one request's uploads live while it runs (removed afterwards)."""
    return tempfile.TemporaryDirectory(prefix="modaverse-upload-")
