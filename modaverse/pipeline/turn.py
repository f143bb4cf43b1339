"""What one request is while it runs and after: its prepared prompt, its decoded reply, its turn.

A :class:`Turn` is what the assistant returns and what a conversation's history holds; it
keeps its inputs' embeddings, so earlier media stay in the conversation without being
re-encoded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modaverse.llm.prompt import Prompt
from modaverse.media import MediaInput
from modaverse.meta import schema as meta


@dataclass(frozen=True)
class InputRef:
    path: str
    modality: str


@dataclass
class Turn:
    """One exchange: what was asked, what the model answered, and what was rendered."""

    instruction: str
    inputs: list[InputRef]
    meta: meta.MetaResponse
    raw: str
    constrained: bool
    fallback: str | None = None  # why an unconstrained answer was kept as plain text
    outputs: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # invocations that failed to render, with the reason
    trimmed: int = 0  # history turns dropped to fit the context
    timings: dict[str, float] = field(default_factory=dict)
    embeddings: torch.Tensor | None = field(default=None, repr=False)  # ImageBind, [len(inputs), D]
    finish_reason: str = "stop"  # stop: the model ended its answer; length: the token cap ended it

    @property
    def text(self) -> str:
        return self.meta.text

    @property
    def invocations(self) -> list[meta.Invocation]:
        return list(self.meta.invocations)

    def to_dict(self) -> dict:
        return {
            "instruction": self.instruction,
            "inputs": [{"path": i.path, "modality": i.modality} for i in self.inputs],
            "meta_response": self.meta.as_dict(),
            "outputs": [str(p) for p in self.outputs],
            "render_errors": self.errors,
            "raw": self.raw,
            "constrained": self.constrained,
            "fallback": self.fallback,
            "trimmed_turns": self.trimmed,
            "finish_reason": self.finish_reason,
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


@dataclass
class Prepared:
    """A request ready to decode: loaded inputs, their embeddings, the prompt and its input embeddings."""

    items: list[MediaInput]
    embeddings: torch.Tensor  # ImageBind, [len(items), D]
    prompt: Prompt
    inputs_embeds: torch.Tensor  # [1, L, H]
    timings: dict[str, float]


@dataclass
class Reply:
    """A decoded meta-response: parsed, raw, and how it was obtained."""

    meta: meta.MetaResponse
    raw: str
    constrained: bool
    fallback: str | None
    timings: dict[str, float]
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Decoding:
    """How a batch is decoded; requests decoded together share these (``ModaVerse.settings`` fills them)."""

    constrained: bool
    max_new_tokens: int
    temperature: float
    seed: int
    top_p: float = 1.0


@dataclass
class Request:
    """One request of a batch: what the user sent, and where its text and outputs go."""

    instruction: str
    inputs: Sequence = ()  # paths or loaded MediaInput
    history: Sequence[Turn] = ()
    on_text: Callable[[str], None] | None = None
    output_dir: str | os.PathLike | None = None
    system: str | None = None  # the client's system text, after the profile's own
    stop: tuple[str, ...] = ()  # the reply text ends before the first of these (OpenAI's ``stop``)


class RowStream:
    """One row of a decoding batch: its tokens up to its end, time to first token, and the reply text
    streamed as it grows. With ``stop`` strings, text that could begin one is held back until it cannot;
    once one appears the row is ``stopped`` and its reply text ends before it."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None, constrained: bool,
                 stop: Sequence[str] = ()):
        self.tok, self.on_text, self.constrained, self.stop = tokenizer, on_text, constrained, tuple(stop)
        self.ids: list[int] = []
        self.start = self.end_time = time.perf_counter()
        self.first: float | None = None
        self.shown = ""
        self.stopped: str | None = None  # the reply text up to the stop string that ended the row

    def add(self, token: int, now: float) -> None:
        """The row's next token (the decoder stops calling once the row has ended)."""
        if self.first is None:
            self.first = now
        self.ids.append(token)
        self.end_time = now
        if self.on_text is None and not self.stop:
            return
        raw = self.tok.decode(self.ids, skip_special_tokens=True)
        # A trailing U+FFFD is a character whose bytes have not all arrived yet: wait for them.
        text = (meta.text_prefix(raw) if self.constrained else raw).rstrip("\ufffd")
        if self.stop:
            text = self._before_stop(text)
        if self.on_text is not None and len(text) > len(self.shown) and text.startswith(self.shown):
            self.on_text(text[len(self.shown) :])
            self.shown = text

    def _before_stop(self, text: str) -> str:
        """The text that may be shown: cut at a stop string found, else short of any stop string's start."""
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if found:
            self.stopped = text[: min(found)]
            return self.stopped
        hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return text[: len(text) - hold]
