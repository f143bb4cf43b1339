"""A running decode that requests join between steps and leave when their answer ends.

Continuous batching: a server does not wait for a whole batch to finish before taking the
next request. :class:`Session` wraps a :class:`~modaverse.llm.decode.Decoder` with what the
pipeline knows about each row (its request, its prepared prompt, its streamed text) and
turns each finished row into a reply. ``ModaVerse.answer`` runs one session to its end; the
server's batcher keeps one running and feeds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

import torch

from modaverse.config import MIN_NEW_TOKENS
from modaverse.core.errors import ModaverseError
from modaverse.llm.decode import Decoder, Sampling
from modaverse.media import MediaInput
from modaverse.pipeline.turn import Decoding, Prepared, Reply, Request, RowStream


def sampling(settings: Decoding) -> Sampling:
    return Sampling(settings.max_new_tokens, settings.temperature, settings.top_p, settings.seed)


class Session:
    """Rows each known by the key its caller gave it. They share ``settings.constrained`` (one grammar
    runs them all); length, temperature, top-p and seed are each row's own (:meth:`admit`)."""

    def __init__(self, pipe, settings: Decoding):
        self.pipe, self.settings = pipe, settings
        self._tok = pipe.llm.tokenizer
        self.vicuna_free = not settings.constrained and pipe.prompts.use_vicuna
        self.decoder = Decoder(
            pipe.llm.model, sampling(settings),
            stop_ids=pipe.stop_ids, suppress_ids=sorted(pipe.llm.marker_ids.values()),
            constraint=pipe.grammar.processor(max(settings.max_new_tokens, MIN_NEW_TOKENS))
            if settings.constrained else None,
            on_token=self._on_token, prefix=pipe.prefix())
        self._rows: dict[int, tuple[Hashable, Prepared | None, RowStream, Decoding]] = {}

    def __len__(self) -> int:
        return len(self.decoder)

    @property
    def joinable(self) -> bool:
        return self.decoder.joinable

    def _on_token(self, row: int, token: int) -> bool:
        stream = self._rows[row][2]
        stream.add(token, time.perf_counter())
        if stream.stopped is not None:
            return True
        # the Vicuna template's turns end at "###" (a string, not a token) when decoding freely
        return self.vicuna_free and "###" in self._tok.decode(stream.ids, skip_special_tokens=True)

    def join(self, keys: Sequence[Hashable], prompts: Sequence[torch.Tensor],
             on_texts: Sequence[Callable[[str], None] | None], prepared: Sequence[Prepared | None] | None = None,
             stops: Sequence[Sequence[str]] | None = None, settings: Sequence[Decoding] | None = None) -> None:
        """Prefills ``prompts`` and adds them to the running batch, each with its ``settings`` (default: the
        session's)."""
        stops = stops or [()] * len(prompts)
        settings = list(settings or [self.settings] * len(prompts))
        if any(s.constrained != self.settings.constrained for s in settings):
            raise ValueError("rows of one session share settings.constrained")
        streams = [RowStream(self._tok, on_text, self.settings.constrained, stop)
                   for on_text, stop in zip(on_texts, stops, strict=True)]
        prepared = prepared or [None] * len(prompts)
        # under the grammar's least budget the reply is cut mid-JSON (and says so), never wrapped up early
        ids = self.decoder.join(prompts, [sampling(s) for s in settings],
                                [max(s.max_new_tokens, MIN_NEW_TOKENS) for s in settings])
        for row, key, prep, st, s in zip(ids, keys, prepared, streams, settings, strict=True):
            self._rows[row] = (key, prep, st, s)  # tokens arrive only in step(), after the rows are known

    def admit(self, requests: Sequence[tuple[Hashable, Request]], settings: Sequence[Decoding] | None = None
              ) -> list[tuple[Hashable, ModaverseError]]:
        """Loads, encodes (one encoder batch) and prepares requests, and joins them, each with its
        ``settings`` (default: the session's); returns the refused ones."""
        pipe, refused = self.pipe, []
        settings = list(settings or [self.settings] * len(requests))
        loaded: list[tuple[Hashable, Request, Decoding, list[MediaInput]]] = []
        for (key, r), s in zip(requests, settings, strict=True):
            try:
                loaded.append((key, r, s, pipe.load_inputs(r.inputs)))
            except ModaverseError as e:
                refused.append((key, e))
        t = time.perf_counter()
        table = pipe.embed([item for *_, items in loaded for item in items])
        encode_s = (time.perf_counter() - t) / max(1, len(loaded))
        ready: list[tuple[Hashable, Request, Decoding, Prepared]] = []
        start = 0
        for key, r, s, items in loaded:
            try:
                prepared = pipe.prepare(r.instruction, items, r.history, s.max_new_tokens,
                                        table[start : start + len(items)], system=r.system)
                prepared.timings["encode"] = encode_s
                ready.append((key, r, s, prepared))
            except ModaverseError as e:
                refused.append((key, e))
            start += len(items)
        if ready:
            self.join([k for k, *_ in ready], [p.inputs_embeds for *_, p in ready], [r.on_text for _, r, _, _ in ready],
                      [p for *_, p in ready], [r.stop for _, r, _, _ in ready], [s for _, _, s, _ in ready])
        return refused

    def leave(self, keys: Sequence[Hashable]) -> None:
        """Drops these rows (their clients went away) before the next step; they get no reply."""
        keys = set(keys)
        gone = {row for row, (key, *_) in self._rows.items() if key in keys}
        self.decoder.leave(gone)
        for row in gone:
            del self._rows[row]

    def step(self) -> list[tuple[Hashable, Reply | ModaverseError, Prepared | None]]:
        """One token for every row; the rows that ended, with their replies (or why they have none)."""
        done = []
        for row in self.decoder.step():
            key, prepared, stream, settings = self._rows.pop(row)
            raw = self._tok.decode(stream.ids, skip_special_tokens=True)
            if self.vicuna_free:
                raw = raw.split("###")[0]
            done.append((key, self.pipe.read_reply(raw, stream, settings), prepared))
        return done
