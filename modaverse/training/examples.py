"""Tokenised conversations -> training examples -> padded batches.

A conversation longer than the budget loses its oldest turns; one whose last exchange
alone does not fit is dropped. Both are counted and reported, never done silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from modaverse.data.conversation import IGNORE, tokenize
from modaverse.llm.prompt import Message, Prompt, PromptBuilder, PromptError


@dataclass
class Example:
    """One tokenised conversation; ``media`` are rows of the run's feature table, in record order."""

    prompt: Prompt
    labels: torch.Tensor
    media: list[int]
    modalities: list[str]

    def __len__(self) -> int:
        return len(self.prompt)


@dataclass
class Stats:
    records: int = 0
    examples: int = 0
    dropped: int = 0  # the last exchange alone exceeds the budget
    trimmed_turns: int = 0  # history turns left out to fit
    tokens: int = 0
    target_tokens: int = 0
    dropped_lines: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "dropped_lines"} | {
            "dropped_lines": self.dropped_lines[:20]}


def build_examples(builder: PromptBuilder, conversations: Sequence[tuple[int, list[Message], list[int], list[str]]],
                   on_progress: Callable[[int], None] | None = None) -> tuple[list[Example], Stats]:
    """``conversations``: (line number, messages, feature rows, modalities) per record."""
    stats, out = Stats(records=len(conversations)), []
    for line, msgs, rows, mods in conversations:
        try:
            prompt, labels = tokenize(builder, msgs)
        except PromptError:
            stats.dropped += 1
            stats.dropped_lines.append(line)
        else:
            stats.trimmed_turns += prompt.trimmed
            stats.tokens += len(prompt)
            stats.target_tokens += int((labels != IGNORE).sum())
            out.append(Example(prompt, labels, rows, mods))
        if on_progress:
            on_progress(1)
    stats.examples = len(out)
    return out, stats


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L], right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompts: list[Prompt]
    media: list[list[int]]  # per example: feature rows (index i = media input i of the prompt)
    modalities: list[list[str]]


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    length = max(len(e) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e)
        ids[b, :n], labels[b, :n], mask[b, :n] = e.prompt.input_ids, e.labels, 1
    return Batch(ids, mask, labels, [e.prompt for e in examples], [e.media for e in examples],
                 [e.modalities for e in examples])
