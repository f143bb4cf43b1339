"""The one assistant a server shares between its web demo, its REST API and its chat API.

Why a service object: the pipeline is built once, at start-up (never at import), and
holds one model, fed by one batching worker (:mod:`.batcher`): requests that arrive
together decode together. Requests wait in a bounded queue; when ``queue_size`` are
already waiting, the next is refused at once (:class:`Busy`, HTTP 503) rather than piling
up. Each request renders into a folder named by 128 random bits, so one client's outputs
cannot be found by guessing URLs; with ``outputs_ttl``, folders older than that many
seconds are removed in the background. A request that fails raises inside its own call
only: the model, the worker and the queue are left as they were.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
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


class Cancelled(ModaverseError):
    """The client went away before its answer was done; its row left the batch."""


class UploadError(ModaverseError):
    """An upload refused before any model work, with the HTTP status that says why and, for the chat
    API, the request field at fault (``messages[0].content[1]``)."""

    def __init__(self, message: str, status: int, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class Limits:
    """What one request may send, how many may wait, how they batch; the ``serve`` flags set them."""

    max_upload_mb: float = 50.0
    max_files: int = 8
    queue_size: int = 8
    max_batch: int = 8
    batch_wait_ms: float = 50.0
    embedding_cache: int = 256  # embeddings of media already seen, kept by content
    outputs_ttl: float | None = None  # seconds an output folder is kept; None: for ever
    sse_keepalive_s: float = 15.0  # a comment line on a silent stream this often, so proxies keep it open

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
    render: bool = True  # run the invocations' generators (on the render worker, one at a time)
    top_p: float | None = None
    stop: tuple[str, ...] = ()  # the reply text ends before the first of these
    system: str | None = None  # a client's system text, after the profile's system prompt


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


def check_uploads(uploads: list[tuple[str, int, str | None]], limits: Limits, per: str = "request",
                  labels: list[str] | None = None) -> None:
    """Refuses what is clearly not a request's inputs before any is read or saved: too many or too
    large files (413), unknown types (415) or modalities (422). ``uploads``: (name, bytes, modality);
    ``labels`` name them in errors instead (the chat API's ``messages[0].content[1]``)."""
    if len(uploads) > limits.max_files:
        raise UploadError(f"{len(uploads)} files: at most {limits.max_files} per {per}", 413,
                          labels[limits.max_files] if labels else None)
    for k, (name, size, modality) in enumerate(uploads):
        label = labels[k] if labels else None
        who = label or name
        if size > limits.max_upload_bytes:
            raise UploadError(f"{who}: {size / 1048576:.1f} MB is over the {limits.max_upload_mb:g} MB upload limit",
                              413, label)
        ext = Path(name or "").suffix.lower()
        if ext not in SUPPORTED:
            raise UploadError(f"{who}: unsupported file type {ext[:20] or '(no extension)'!r}; "
                              f"supported: {' '.join(SUPPORTED)}", 415, label)
        if modality is not None and modality not in MODALITIES:
            raise UploadError(f"{who}: unknown modality {modality!r}; choose from {', '.join(MODALITIES)}", 422, label)


class Arrival:
    """One request being read; ``read()`` (once it is queued or refused, or when its response ends) stops
    counting it. Calling it twice is harmless."""

    def __init__(self, service: Service):
        self.service, self._done = service, False
        with service._count:
            service._arriving += 1

    def read(self) -> None:
        with self.service._count:
            if not self._done:
                self._done = True
                self.service._arriving -= 1


class Service:
    """One pipeline behind one batching worker, at most ``limits.queue_size`` requests waiting."""

    def __init__(self, pipe, outputs: Path, limits: Limits | None = None):
        from modaverse.encoder.memo import EmbeddingLRU
        from modaverse.serve.batcher import Batcher

        self.pipe, self.outputs, self.limits = pipe, Path(outputs), limits or Limits()
        limits = self.limits
        self.outputs.mkdir(parents=True, exist_ok=True)
        if limits.embedding_cache:
            pipe.embedding_cache = EmbeddingLRU(limits.embedding_cache)
        self._arriving = 0  # requests the server is reading (parsing, saving uploads), not yet submitted
        self.batcher = Batcher(pipe, limits.max_batch, limits.batch_wait_ms, lambda: self._arriving)
        # in flight: those being answered (a batch) plus those waiting
        self._slots = threading.BoundedSemaphore(limits.queue_size + limits.max_batch)
        self._count = threading.Lock()
        self._jobs: dict[str, object] = {}  # request id -> its batcher job, while it runs
        self.served = 0
        self.started = time.time()
        if limits.outputs_ttl:
            threading.Thread(target=self._prune_forever, name="modaverse-prune", daemon=True).start()

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(self.pipe.capabilities)

    def status(self) -> dict:
        cache = self.pipe.embedding_cache
        return {"status": "ok", "config": self.pipe.config.name, "capabilities": list(self.capabilities),
                "modalities": list(self.pipe.encoder.modalities), "queue": {"waiting": self.batcher.waiting,
                "size": self.limits.queue_size, "oldest_wait_s": round(self.batcher.oldest_wait(), 3)}, "served": self.served,
                "uptime_s": round(time.time() - self.started, 1), "batches": self.batcher.stats(),
                "generators": self.pipe.zoo.residency(),
                "embedding_cache": cache.stats() if cache is not None else None}

    def arriving(self) -> Arrival:
        """Counts a request the server is still reading (body, uploads) until :meth:`Arrival.read`, so
        the batcher knows more work is coming and waits for it."""
        return Arrival(self)

    def _decode(self, files: list[tuple[Path, str | None]], labels: list[str] | None) -> list:
        """Decodes uploads that passed :func:`check_uploads`, on the worker when the request's turn
        comes; a file that is not what it claims is a 422 naming it (by its label, e.g. the chat
        request's ``messages[0].content[1]``, never by the server's path) and why. Decoding is the step
        that costs memory (an image up to ``media.max_pixels``), so only the running batch's files are decoded."""
        items = []
        for k, (path, modality) in enumerate(files):
            try:
                items.append(self.pipe.encoder.load(path, modality))
            except ModaverseError as e:  # undecodable, mislabelled, or a modality this config has no tower for
                label = labels[k] if labels else path.name
                message = str(e).replace(str(path), label).replace(str(path.parent) + "/", "")
                raise UploadError(message, 422, labels[k] if labels else None) from None
        return items

    def has_room(self) -> bool:
        """Whether a request would be queued now (checked before a large body is parsed; racy by design)."""
        if not self._slots.acquire(blocking=False):
            return False
        self._slots.release()
        return True

    def submit(self, instruction: str, files: list[tuple[Path, str | None]], history: list | None = None,
               settings: Settings | None = None, on_text=None, labels: list[str] | None = None) -> tuple[str, Future]:
        """Queues one request; :class:`Busy` at once when the queue is full. Returns its id and a future
        of its turn. ``files`` are saved uploads (path, modality or None), decoded when the request's
        batch runs, never before: a burst of uploads waits as bytes on disk, not as decoded pixels.
        ``labels`` name the files in errors (default: their names)."""
        from modaverse.pipeline.turn import Request
        from modaverse.serve.batcher import Job

        if not self._slots.acquire(blocking=False):
            raise Busy(f"the server is busy ({self.limits.queue_size} requests waiting); retry shortly")
        settings = settings or Settings()
        rid = secrets.token_hex(16)
        folder = self.outputs / rid
        request = Request(instruction, (), history or [], on_text, folder if settings.render else None,
                          settings.system, tuple(settings.stop))
        decoding = self.pipe.settings(settings.constrained, settings.max_new_tokens, settings.temperature,
                                      settings.seed, settings.top_p)
        job = Job(lambda: self._decode(files, labels), request, decoding)
        with self._count:
            self._jobs[rid] = job
        future = self.batcher.submit(job)
        future.add_done_callback(lambda f: self._done(f, folder, rid))
        return rid, future

    def cancel(self, rid: str) -> None:
        """The client went away: the request leaves the queue, or its row the running batch."""
        with self._count:
            job = self._jobs.get(rid)
        if job is not None:
            self.batcher.cancel(job)

    def _done(self, future: Future, folder: Path, rid: str) -> None:
        with self._count:
            self._jobs.pop(rid, None)
        if future.exception() is None:
            with self._count:
                self.served += 1
        else:
            shutil.rmtree(folder, ignore_errors=True)
        self._slots.release()

    def generate(self, instruction: str, files: list[tuple[Path, str | None]], history: list | None = None,
                 settings: Settings | None = None, on_text=None) -> Result:
        """Runs one request when its batch comes (blocking); :class:`Busy` at once when the queue is full."""
        rid, future = self.submit(instruction, files, history, settings, on_text)
        turn = future.result()
        return Result(rid, turn, self.outputs / rid, turn.timings.get("queue", 0.0))

    def prune(self) -> int:
        """Removes output folders older than ``outputs_ttl`` seconds; returns how many."""
        cutoff = time.time() - (self.limits.outputs_ttl or float("inf"))
        gone = 0
        for folder in self.outputs.iterdir():
            if ID_PATTERN.fullmatch(folder.name) and folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        return gone

    def _prune_forever(self) -> None:
        every = max(0.5, min(60.0, self.limits.outputs_ttl / 4))
        while True:
            time.sleep(every)
            try:
                self.prune()
            except OSError:  # a folder removed under us, or a transient error: next round
                continue

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
