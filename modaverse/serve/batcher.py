"""Dynamic batching: requests that arrive close together are answered as one decoding batch.

Decoding one sequence at a time leaves an accelerator (and most of a CPU's vector units)
idle: a step of a batch of 8 to 32 costs little more than a step of one. The worker takes
the oldest waiting job and, while more requests are arriving (the server is still reading
them) or the last batch held several, waits up to ``wait_ms`` for more that can share its batch
(the same grammar setting; greedy, sampled and seeded rows mix, as each row samples with its own
seeded generator), up to ``max_batch``, and starts a decoding session (:meth:`ModaVerse.session`): their uploads
are decoded on the worker (never before their turn), their media encoded in one encoder
batch, their prompts decoded together. Between steps, requests that arrived since join the
running batch while it has room (continuous batching), and each row that ends leaves it.
Admission is first come, first served: requests join in arrival order, and one that cannot join
the running batch (the other grammar setting, or a cache rows cannot share) stops the queue
behind it until the batch drains and its own starts, so no request is overtaken indefinitely. A row whose answer asks for outputs is handed to the render worker, a thread of
its own that renders one request at a time (within the zoo's memory budget) while the batcher
keeps decoding: a video being rendered never stalls another request's stream. A job whose
client went away (:meth:`Batcher.cancel`) leaves the queue, or its row the batch before the next
step. Every job's future gets its own turn or its own error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from modaverse.serve.service import Cancelled

log = logging.getLogger("modaverse.serve")


@dataclass
class Job:
    """One request waiting for the model: how to read its inputs, and what it asks."""

    read_inputs: Callable[[], list]  # decodes the uploads (on the worker); raises for a bad one
    request: object  # modaverse.pipeline.turn.Request, its inputs filled in by the worker
    settings: object  # modaverse.pipeline.turn.Decoding
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # the client went away: the worker drops the job before its next step

    @property
    def key(self) -> object:
        """What jobs of one batch share: the grammar runs all of its rows or none."""
        return self.settings.constrained


class Batcher:
    """One worker thread feeding the pipeline batches of up to ``max_batch`` compatible jobs."""

    def __init__(self, pipe, max_batch: int = 8, wait_ms: float = 50.0, arriving: Callable[[], int] = lambda: 0):
        self.pipe, self.max_batch, self.wait, self.arriving = pipe, max_batch, wait_ms / 1000, arriving
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self.sizes: Counter[int] = Counter()  # size of a batch when it starts -> how many batches had it
        self.steps: Counter[int] = Counter()  # rows decoding together -> how many steps had that many
        self.joined = 0  # requests that joined a batch already decoding
        self.cancelled = 0  # requests whose clients went away before their answer was done
        self.rendering = 0  # requests handed to the render worker and not yet rendered
        self._last_size = 0
        # one render at a time, beside decoding: generators share the zoo's memory budget
        self._render = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modaverse-render")
        self._worker = threading.Thread(target=self._run, name="modaverse-batcher", daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        """Requests queued and not yet taken into a batch."""
        return len(self._jobs)

    def submit(self, job: Job) -> Future:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def cancel(self, job: Job) -> None:
        """Its client went away: a waiting job leaves the queue now, a decoding one before the next step."""
        with self._ready:
            job.cancelled = True
            waiting = job in self._jobs
            if waiting:
                self._jobs.remove(job)
        if waiting:
            self._drop(job)

    def _drop(self, job: Job) -> None:
        self.cancelled += 1
        if not job.future.done():
            job.future.set_exception(Cancelled("the client went away"))

    def _next_batch(self) -> list[Job]:
        with self._ready:
            while not self._jobs:
                self._ready.wait()
            first = self._jobs.popleft()
            batch = [first]
            deadline = time.perf_counter() + self.wait
            busy = self._last_size > 1
            while len(batch) < self.max_batch:
                batch += self._take(first.key, self.max_batch - len(batch))
                left = deadline - time.perf_counter()
                # wait only while the load is heavy (the last batch was several) or more requests are on
                # their way (being read by the server; checked again every 5 ms): a lone request is not kept
                if len(batch) >= self.max_batch or left <= 0 or not (busy or self.arriving() > 0):
                    break
                self._ready.wait(left if busy else min(left, 0.005))
            return batch

    def _take(self, key: object, room: int) -> list[Job]:
        """The oldest waiting jobs, up to ``room``, while they have this key: the first that has not
        is next in line, and nobody behind it overtakes it."""
        taken = []
        while self._jobs and len(taken) < room and self._jobs[0].key == key:
            taken.append(self._jobs.popleft())
        return taken

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            self.sizes[len(batch)] += 1
            self._last_size = len(batch)
            live: dict[int, Job] = {}
            try:
                self._serve(batch, live)
            except BaseException as e:  # a bug must not kill the worker: each job hears about it
                log.exception("batch failed")
                for job in [*batch, *live.values()]:
                    if not job.future.done():
                        job.future.set_exception(e)

    def _serve(self, batch: list[Job], live: dict[int, Job]) -> None:
        """Runs one decoding session: the batch, then compatible newcomers joining between steps
        (continuous batching) while there is room, until every row has ended."""
        session = self.pipe.session(batch[0].settings)
        self._admit(session, batch, live)
        while len(session):
            gone = [key for key, job in live.items() if job.cancelled]
            if gone:
                session.leave(gone)
                for key in gone:
                    self._drop(live.pop(key))
                if not len(session):
                    break
            self.steps[len(session)] += 1
            for key, reply, prepared in session.step():
                self._finish(live.pop(key), reply, prepared)
            room = self.max_batch - len(session)
            if room > 0 and len(session) and session.joinable:  # else the queue waits for the batch to drain
                with self._ready:
                    newcomers = self._take(batch[0].key, room)
                if newcomers:
                    self.joined += len(newcomers)
                    self._admit(session, newcomers, live)

    def _admit(self, session, jobs: list[Job], live: dict[int, Job]) -> None:
        """Decodes the jobs' uploads (here, on the worker, one file at a time) and joins them to the session."""
        ready = []
        for job in jobs:
            job.started = time.perf_counter()
            try:
                job.request.inputs = job.read_inputs()
            except Exception as e:
                job.future.set_exception(e)
                continue
            live[id(job)] = job
            ready.append(job)
        for key, error in session.admit([(id(j), j.request) for j in ready], [j.settings for j in ready]):
            live.pop(key).future.set_exception(error)

    def _finish(self, job: Job, reply, prepared) -> None:
        """A finished row's turn: at once when nothing is to be rendered, else on the render worker."""
        if isinstance(reply, BaseException):
            job.future.set_exception(reply)
        elif job.request.output_dir is not None and reply.meta.invocations:
            with self._ready:
                self.rendering += 1
            self._render.submit(self._rendered, job, reply, prepared)
        else:
            self._complete(job, reply, prepared)

    def _rendered(self, job: Job, reply, prepared) -> None:
        try:
            self._complete(job, reply, prepared)
        finally:
            with self._ready:
                self.rendering -= 1

    def _complete(self, job: Job, reply, prepared) -> None:
        if job.cancelled:  # gone while it waited for the render worker: nothing to render for
            self._drop(job)
            return
        try:
            turn = self.pipe.finish(job.request, prepared, reply)  # renders, when the request asks for it
        except Exception as e:
            job.future.set_exception(e)
            return
        turn.timings["queue"] = job.started - job.queued
        job.future.set_result(turn)

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting queued request has waited (0 when none waits)."""
        with self._ready:
            return time.perf_counter() - self._jobs[0].queued if self._jobs else 0.0

    def stats(self) -> dict:
        return {"max_batch": self.max_batch, "wait_ms": self.wait * 1000,
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                "steps": {str(k): v for k, v in sorted(self.steps.items())}, "joined": self.joined,
                "cancelled": self.cancelled, "rendering": self.rendering}
