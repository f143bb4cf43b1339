"""The generation run: async requests to an OpenAI-compatible API, kept crash-safe and resumable.

- **Requests** go through the official ``openai`` client (``AsyncOpenAI``), so any server
  that speaks the chat-completions API works (``--base-url``). At most ``concurrency``
  are in flight; ``--max-requests-per-minute`` spaces them evenly (aiolimiter).
- **Retries** are the client's own: 408/409/429/5xx and timeouts back off exponentially
  with jitter, and a ``Retry-After``/``retry-after-ms`` header sets the wait. A request
  that still fails is counted and its task is asked again by a later run; a key, model
  or request the server refuses outright stops the run with the server's reason.
- **Files.** Accepted records are appended to the output and flushed one by one; rejected
  replies go to ``<output stem>.rejects.jsonl`` with the reason, and every answered
  request's token counts to ``<output stem>.usage.jsonl``. A kill or Ctrl-C loses nothing
  that was accepted; an interrupted last line is cut off on the next start.
- **Resume.** Task ``i`` is a pure function of (seed, i) and a record's id names its
  task, so a rerun with the same output skips every task already accepted or rejected
  and stops at ``--num`` records, with no duplicates.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from modaverse.core.errors import ModaverseError
from modaverse.core.jsonl import drop_partial_line, json_objects, numbered_lines
from modaverse.data.records import Record, RecordError, parse_record, record_line
from modaverse.instruct.dedup import NearDuplicates
from modaverse.instruct.replies import Rejected, not_a_completion, reply_schema, to_record
from modaverse.instruct.settings import Settings
from modaverse.instruct.sources import Templates, load_captions, load_references, load_seeds, load_templates
from modaverse.instruct.tasks import Planner, Task, messages
from modaverse.meta import schema as meta

log = logging.getLogger("modaverse.instructions")

#: USD per million prompt and completion tokens, as OpenAI listed them in 2025 (``--price`` overrides).
LIST_PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-nano": (0.10, 0.40),
               "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1": (2.00, 8.00), "gpt-3.5-turbo": (0.50, 1.50)}
#: This many rejected replies in a row means the prompts or the model are not working: stop spending.
MAX_REJECT_STREAK = 50
_ID = re.compile(r"^gen-s(\d+)-(\d+)$")


class GenerationError(ModaverseError):
    """The run cannot go on (refused key, unknown model, unreachable server...); names the cause."""


@dataclass
class Counts:
    """What a run did; ``tokens`` and ``cost_usd`` include earlier runs on the same output."""

    records: int = 0  # in the output file, all runs
    target: int = 0
    accepted: int = 0  # this run
    rejected: int = 0
    failed: int = 0  # requests that failed after all retries
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0  # all runs
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    rejects: dict[str, int] = field(default_factory=dict)  # reason kind -> count, this run


def caps(settings: Settings) -> tuple[str, ...]:
    return settings.capabilities or meta.BUILTIN_CAPABILITIES


def shard_target(num: int, shard: tuple[int, int]) -> int:
    """Shard ``i`` of ``n`` makes its share of ``num``; the shares add up to ``num``."""
    i, n = shard
    return num // n + (i < num % n)


def side_file(output: Path, name: str) -> Path:
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(f"{stem}.{name}.jsonl")


def record_id(seed: int, index: int) -> str:
    return f"gen-s{seed}-{index:07d}"


def base_url(settings: Settings) -> str | None:
    """The API the run talks to; None means OpenAI's own."""
    return settings.base_url or os.environ.get("OPENAI_BASE_URL") or None


def unit_price(settings: Settings) -> tuple[float, float] | None:
    if settings.price is not None:
        return settings.price
    if base_url(settings):
        return None  # another server: OpenAI's prices say nothing about it
    names = sorted((n for n in LIST_PRICES if settings.model.startswith(n)), key=len, reverse=True)
    return LIST_PRICES[names[0]] if names else None


class Journal:
    """The run's three append-only files and what they say has been done."""

    def __init__(self, settings: Settings):
        assert settings.output is not None
        self.output = settings.output
        self.rejects_path = side_file(self.output, "rejects")
        self.usage_path = side_file(self.output, "usage")
        self.seed, self.caps = settings.seed, caps(settings)
        self.done: set[int] = set()
        self.records = 0
        self.prompt_tokens = self.completion_tokens = 0
        self._files: dict[Path, TextIO] = {}

    def load(self, dedup: NearDuplicates, progress: bool = True) -> None:
        """Reads what earlier runs wrote: kept records (into ``dedup`` too), rejects and usage.

        A bar (in bytes) appears when this takes over a second: about 4 minutes for 2 M records.
        """
        from tqdm.auto import tqdm

        for path in (self.output, self.rejects_path, self.usage_path):
            drop_partial_line(path)
        size = self.output.stat().st_size if self.output.is_file() else 0
        with tqdm(total=size, unit="B", unit_scale=True, desc="read back", file=sys.stderr, delay=1.0,
                  disable=None if progress else True, leave=False) as bar:
            for number, text in self._lines(self.output):
                bar.update(len(text.encode()))
                try:
                    record = parse_record(json.loads(text), self.caps)
                except (json.JSONDecodeError, RecordError) as e:
                    raise GenerationError(
                        f"{self.output}:{number}: not a training record ({e}); generate-instructions appends "
                        "only to files it wrote, so choose another --output") from None
                self.records += 1
                self._mark(record.id)
                dedup.admit(record.id or f"{self.output.name}:{number}", record)
        for _, row in self._objects(self.rejects_path):
            self._mark(row.get("id"))
        for _, row in self._objects(self.usage_path):
            self.prompt_tokens += int(row.get("prompt_tokens") or 0)
            self.completion_tokens += int(row.get("completion_tokens") or 0)

    @staticmethod
    def _lines(path: Path) -> Iterator[tuple[int, str]]:
        if path.exists():
            yield from numbered_lines(path, GenerationError)

    @staticmethod
    def _objects(path: Path) -> Iterator[tuple[int, dict]]:
        if path.exists():
            yield from json_objects(path, GenerationError, hint="; was this file edited?")

    def _mark(self, rid: str | None) -> None:
        m = _ID.match(rid or "")
        if m and int(m.group(1)) == self.seed:
            self.done.add(int(m.group(2)))

    def _append(self, path: Path, line: str) -> None:
        f = self._files.get(path)
        if f is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[path] = path.open("a", encoding="utf-8")
        f.write(line + "\n")
        f.flush()  # in the OS's hands now: a killed process loses nothing written

    def accept(self, record: Record) -> None:
        self._append(self.output, record_line(record))
        self.records += 1

    def reject(self, task: Task, rid: str, reason: str, content: str | None) -> None:
        row = {"id": rid, "kind": task.kind, "reason": reason, "reply": content}
        self._append(self.rejects_path, json.dumps(row, ensure_ascii=False))

    def usage(self, rid: str, status: str, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        row = {"id": rid, "status": status, "prompt_tokens": prompt, "completion_tokens": completion}
        self._append(self.usage_path, json.dumps(row))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


@dataclass
class Prepared:
    """Sources loaded and checked: everything needed before the first request."""

    planner: Planner
    templates: Templates
    schema: dict


def prepare(settings: Settings) -> Prepared:
    captions = load_captions(settings.captions, settings.check_media)
    references = load_references(settings.references, caps(settings))
    seeds = load_seeds(settings.seeds, caps(settings))
    planner = Planner(captions, references, seeds, settings.kinds, settings.seed, settings.examples,
                      settings.references_per_request)
    return Prepared(planner, load_templates(settings.templates), reply_schema(caps(settings)))


def shard_indices(shard: tuple[int, int], skip: set[int] = frozenset()) -> Iterator[int]:
    i, n = shard
    return (k for k in itertools.count(i, n) if k not in skip)


def request_kwargs(settings: Settings, prepared: Prepared, task: Task) -> dict:
    """The chat-completions arguments for one task."""
    kwargs = {"model": settings.model, "temperature": settings.temperature,
              "max_completion_tokens": settings.max_tokens,
              "messages": messages(task, prepared.templates, caps(settings))}
    if settings.structured_outputs:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "modaverse_instruction", "strict": True, "schema": prepared.schema}}
    return kwargs


def dry_run(settings: Settings, out: TextIO) -> None:
    """Prints the requests the first ``num`` tasks of the shard would send; needs no key or server."""
    prepared = prepare(settings)
    if settings.structured_outputs:
        print(f"response_format: JSON schema {json.dumps(prepared.schema)}", file=out)
    indices = shard_indices(settings.shard)
    for _ in range(settings.num):
        task = prepared.planner.task(next(indices))
        print(f"\n=== request {task.index}: {task.describe()} ===", file=out)
        for message in request_kwargs(settings, prepared, task)["messages"]:
            print(f"--- {message['role']} ---\n{message['content']}", file=out)


def _client(settings: Settings, counts: Counts):
    import openai

    url = base_url(settings)
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        if not url:
            raise GenerationError("OPENAI_API_KEY is not set; export it, point --base-url at a local "
                                  "OpenAI-compatible server, or use --dry-run to see the prompts")
        log.info("OPENAI_API_KEY is not set; sending no key to %s", url)
        key = "unused"

    async def on_request(request) -> None:
        if request.headers.get("x-stainless-retry-count", "0") != "0":
            counts.retries += 1

    async def on_response(response) -> None:
        if response.status_code == 429:
            counts.rate_limited += 1

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [on_request], "response": [on_response]})
    return openai.AsyncOpenAI(api_key=key, base_url=url, timeout=settings.timeout,
                              max_retries=settings.max_retries, http_client=http)


def _fatal(e: Exception, settings: Settings, answered: int) -> GenerationError | None:
    """A failure no retry or later task can fix, as the error that stops the run; None otherwise."""
    import openai

    where = base_url(settings) or "the OpenAI API"
    body = getattr(e, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    detail = str(detail or getattr(e, "message", None) or e).splitlines()[0][:300]
    status = getattr(e, "status_code", None)
    if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
        return GenerationError(f"{where} refused the API key ({status}: {detail}); check OPENAI_API_KEY")
    if isinstance(e, openai.NotFoundError):
        return GenerationError(f"{where}: model {settings.model!r} or the chat-completions endpoint was not "
                               f"found ({status}: {detail}); check --model and --base-url")
    if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
        hint = ("; if the server lacks structured outputs (JSON-schema response_format), pass "
                "--no-structured-outputs" if settings.structured_outputs else "")
        return GenerationError(f"{where} rejected the request ({status}: {detail}){hint}")
    if isinstance(e, openai.RateLimitError) and getattr(e, "code", None) == "insufficient_quota":
        return GenerationError(f"{where}: the account is out of quota ({detail})")
    if isinstance(e, openai.APIConnectionError) and answered == 0:
        return GenerationError(f"cannot reach {where} ({type(e).__name__}: {detail}); check --base-url")
    if isinstance(e, openai.APIStatusError | openai.APIConnectionError):
        return None
    return GenerationError(f"request failed: {type(e).__name__}: {detail}")


class Run:
    """One invocation: workers take task indices, ask the API and journal each outcome."""

    def __init__(self, settings: Settings, prepared: Prepared, journal: Journal, dedup: NearDuplicates,
                 counts: Counts, bar):
        self.s, self.p, self.journal, self.dedup, self.counts, self.bar = (
            settings, prepared, journal, dedup, counts, bar)
        self.indices = shard_indices(settings.shard, journal.done)
        self.out_dir = settings.output.resolve().parent
        self.answered = 0
        self.failure_streak = self.reject_streak = 0
        self.full = asyncio.Event()
        self.slot = asyncio.Condition()
        self.in_flight = 0

    async def main(self) -> None:
        client = _client(self.s, self.counts)
        limiter = None
        if self.s.max_requests_per_minute:
            from aiolimiter import AsyncLimiter

            limiter = AsyncLimiter(1, 60.0 / self.s.max_requests_per_minute)  # evenly spaced, no bursts
        workers = [asyncio.create_task(self._worker(client, limiter)) for _ in range(self.s.concurrency)]
        full = asyncio.create_task(self.full.wait())
        try:
            pending = {full, *workers}
            while not self.full.is_set() and pending - {full}:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done - {full}:
                    t.result()  # re-raises a worker's fatal error
        finally:
            for t in (full, *workers):
                t.cancel()
            await asyncio.gather(full, *workers, return_exceptions=True)
            await client.close()

    async def _worker(self, client, limiter) -> None:
        """Asks for tasks while more are needed; never more in flight than records still missing,
        so reaching the target leaves no paid-for answers behind."""
        while True:
            async with self.slot:
                await self.slot.wait_for(
                    lambda: self.full.is_set() or self.journal.records + self.in_flight < self.counts.target)
                if self.full.is_set():
                    return
                self.in_flight += 1
            try:
                await self._ask(client, limiter, self.p.planner.task(next(self.indices)))
            finally:
                async with self.slot:
                    self.in_flight -= 1
                    self.slot.notify_all()

    async def _ask(self, client, limiter, task: Task) -> None:
        import openai

        for attempt in range(self.s.max_retries + 1):
            if limiter is not None:
                await limiter.acquire()
            try:
                completion = await client.chat.completions.create(**request_kwargs(self.s, self.p, task))
            except openai.OpenAIError as e:
                error = _fatal(e, self.s, self.answered)
                if error:
                    raise error from None
                return self._failed(task, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            problem = not_a_completion(completion)
            if problem is None:
                break
            # A proxy's HTML page or a server of another kind answering 200: retried like a 5xx.
            log.debug("task %d attempt %d: %s", task.index, attempt, problem)
            if attempt < self.s.max_retries:
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        else:
            self.journal.reject(task, record_id(self.s.seed, task.index), problem, None)
            return self._failed(task, problem)
        self.answered += 1
        self.failure_streak = 0
        self._handle(task, completion)

    def _failed(self, task: Task, reason: str) -> None:
        """A request that got no usable answer after its retries: counted, and a long run of them stops."""
        self.counts.failed += 1
        self.failure_streak += 1
        log.debug("task %d failed after retries: %s", task.index, reason)
        limit = max(10, 2 * self.s.concurrency)
        if self.failure_streak >= limit:
            raise GenerationError(f"{limit} requests in a row failed after {self.s.max_retries} retries each; "
                                  f"last: {reason}")

    def _handle(self, task: Task, completion) -> None:
        rid = record_id(self.s.seed, task.index)
        usage = completion.usage
        tokens = (getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
        content = None
        try:
            if not completion.choices:
                raise Rejected("the reply has no choices")
            choice = completion.choices[0]
            content = choice.message.content
            if getattr(choice.message, "refusal", None):
                raise Rejected(f"refused: {choice.message.refusal}")
            if choice.finish_reason == "length":
                raise Rejected(f"cut off at {self.s.max_tokens} tokens (raise --max-tokens)")
            record = to_record(task, content, rid, f"generate-instructions:{task.kind}:{self.s.model}",
                               self.out_dir, caps(self.s))
            twin = self.dedup.admit(rid, record)
            if twin is not None:
                raise Rejected(f"near-duplicate of {twin}")
        except Rejected as e:
            self._rejected(task, rid, str(e), content, tokens)
            return
        self.journal.accept(record)
        self.journal.usage(rid, "accepted", *tokens)
        self.counts.accepted += 1
        self.reject_streak = 0
        self._tick()
        if self.journal.records >= self.counts.target:
            self.full.set()

    def _rejected(self, task: Task, rid: str, reason: str, content: str | None, tokens) -> None:
        self.journal.reject(task, rid, reason, content)
        self.journal.usage(rid, "rejected", *tokens)
        self.counts.rejected += 1
        kind = re.split(r"[:(]| of ", reason)[0].strip()[:80]
        self.counts.rejects[kind] = self.counts.rejects.get(kind, 0) + 1
        self.reject_streak += 1
        self._tick()
        if self.reject_streak >= MAX_REJECT_STREAK:
            raise GenerationError(f"the last {MAX_REJECT_STREAK} replies were all rejected (last: {reason}); "
                                  f"see {self.journal.rejects_path}")

    def _tick(self) -> None:
        c = self.counts
        if self.bar is not None:
            self.bar.n = self.journal.records
            postfix = {"rej": c.rejected, "fail": c.failed, "retry": c.retries,
                       "tok": self.journal.prompt_tokens + self.journal.completion_tokens}
            cost = _cost(self.s, self.journal)
            if cost is not None:
                postfix["$"] = f"{cost:.4f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
        elif c.accepted and c.accepted % max(1, c.target // 20) == 0:
            log.info("%d/%d records, %d rejected, %d failed", self.journal.records, c.target, c.rejected, c.failed)


def _cost(settings: Settings, journal: Journal) -> float | None:
    price = unit_price(settings)
    if price is None:
        return None
    return (journal.prompt_tokens * price[0] + journal.completion_tokens * price[1]) / 1e6


def generate(settings: Settings, progress: bool = True) -> Counts:
    """Runs until the output holds this shard's share of ``num`` records; returns the counts."""
    from tqdm.auto import tqdm

    assert settings.output is not None
    prepared = prepare(settings)
    dedup = NearDuplicates(settings.dedup_threshold)
    journal = Journal(settings)
    journal.load(dedup, progress)
    counts = Counts(target=shard_target(settings.num, settings.shard))
    if journal.records >= counts.target:
        log.info("%s already holds %d record(s), the target of %d; raise --num to add more",
                 settings.output, journal.records, counts.target)
    start = time.monotonic()
    bar = None
    try:
        if journal.records < counts.target:
            bar = tqdm(total=counts.target, initial=journal.records, unit="rec", desc="generate",
                       file=sys.stderr, disable=None if progress else True)
            asyncio.run(Run(settings, prepared, journal, dedup, counts, None if bar.disable else bar).main())
    finally:
        if bar is not None:
            bar.close()
        journal.close()
        _finish(counts, journal, settings, start)
    return counts


def _finish(counts: Counts, journal: Journal, settings: Settings, start: float) -> None:
    counts.records = journal.records
    counts.prompt_tokens, counts.completion_tokens = journal.prompt_tokens, journal.completion_tokens
    counts.cost_usd = _cost(settings, journal)
    counts.seconds = round(time.monotonic() - start, 3)


def summary(counts: Counts, settings: Settings) -> dict:
    """The run's figures as plain data, for the CLI's JSON line."""
    doc = asdict(counts)
    doc["output"] = str(settings.output)
    doc["rejects_file"] = str(side_file(settings.output, "rejects"))
    doc["records_per_second"] = round(counts.accepted / counts.seconds, 3) if counts.seconds else None
    if doc["cost_usd"] is not None:
        doc["cost_usd"] = round(doc["cost_usd"], 6)
    return doc
