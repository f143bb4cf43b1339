"""Batched decoding from prompt embeddings: rows join a running batch and leave it when they end.

transformers' ``generate`` keeps a finished row in the batch, padded, until the longest one
ends, and takes no newcomer until then. Here a :class:`Decoder` is a running batch: a row
that ends is cut out of the batch and its key/value cache, so later steps cost what the
rows still decoding cost; new prompts are prefilled as a group and joined between steps
(continuous batching), their cache left-padded to the batch's length. Left padding, with
position ids counted from each row's first real token, makes a row decode as it would
alone (greedy). The decoder takes an optional constraint (the meta-response grammar:
``add``, ``advance``, ``prefetch``, ``constrain``) and calls ``on_token`` with every token of every row.

Every prompt starts with the same system turn. A :class:`Prefix` holds its key/value cache,
computed once; a prompt that starts with it is prefilled from its first own token (the
padding then sits between the shared prefix and each row's own tokens, masked like any
other). Prefill does not batch on a compute-bound device, so this is most of what a
server saves per request beyond batching the decode steps (vLLM calls it prefix caching).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


def _pad_time(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``x`` left-padded with zeros along ``dim`` to ``length``."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def left_pad(prompts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, L_i, H]`` prompts as one ``[B, max L, H]`` batch padded on the left, and its attention mask."""
    length = max(p.shape[1] for p in prompts)
    embeds = torch.cat([_pad_time(p, length, 1) for p in prompts])
    mask = torch.cat([_pad_time(p.new_ones(p.shape[:2], dtype=torch.long), length, 1) for p in prompts])
    return embeds, mask


class Prefix:
    """The key/value cache of ``embeds`` (``[1, P, H]``), the input embeddings every prompt starts with."""

    def __init__(self, model, embeds: torch.Tensor):
        with torch.inference_mode():
            out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        self.embeds, self._layers = embeds, out.cache.layers
        #: False for caches rows cannot share by concatenation (sliding windows): then it is not used.
        self.usable = all(type(layer) is DynamicLayer for layer in self._layers)

    def __len__(self) -> int:
        return self.embeds.shape[1]

    def starts(self, prompt: torch.Tensor) -> bool:
        """Whether ``prompt`` begins with the prefix and has tokens of its own after it."""
        return prompt.shape[1] > len(self) and torch.equal(prompt[:, : len(self)], self.embeds)

    def expand(self, rows: int):
        """A fresh cache holding the prefix for ``rows`` rows (the prefix's own tensors stay untouched)."""
        return DynamicCache([(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
                             for layer in self._layers])


def _sample(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One row's token from its ``[V]`` scores, drawn with the row's own generator."""
    probs = torch.softmax(scores / sampling.temperature, -1)
    if sampling.top_p < 1:
        ordered, order = probs.sort(-1, descending=True)
        ordered[(ordered.cumsum(-1) - ordered) > sampling.top_p] = 0  # keep the smallest set reaching top_p
        return int(order[torch.multinomial(ordered, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class _Row:
    """One row of a running batch: its id, its own settings and generator, the tokens chosen so far."""

    id: int
    sampling: Sampling
    generator: torch.Generator | None  # a sampled row's own, seeded with its seed
    count: int = 0


def _choose(scores: torch.Tensor, rows: Sequence[_Row]) -> torch.Tensor:
    """Every row's next token: greedy rows by one argmax over the batch, sampled rows each with its own
    seeded generator, so a row's tokens depend on its own seed and inputs, not on the rows beside it."""
    chosen = scores.argmax(-1)
    for k, row in enumerate(rows):
        if row.generator is not None:
            chosen[k] = _sample(scores[k], row.sampling, row.generator)
    return chosen


class Decoder:
    """A running batch of rows (ids from :meth:`join`); :meth:`step` decodes one token for each."""

    def __init__(self, model, sampling: Sampling, *, stop_ids: Sequence[int], suppress_ids: Sequence[int] = (),
                 constraint=None, on_token: Callable[[int, int], bool] | None = None, prefix: Prefix | None = None):
        """``sampling`` is every row's unless :meth:`join` gives a row its own."""
        self.model, self.sampling, self.constraint, self.on_token = model, sampling, constraint, on_token
        self.prefix = prefix if prefix is not None and prefix.usable else None
        self.stop_ids, self.suppress_ids = sorted(set(stop_ids)), sorted(set(suppress_ids))
        self._stops = self._suppress = None  # as tensors on the model's device, made at the first join
        self.rows: list[_Row] = []  # the rows still in the batch, in batch order
        self.cache = self.mask = self.logits = None
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[int]:
        """The ids of the rows still in the batch, in batch order."""
        return [row.id for row in self.rows]

    @property
    def joinable(self) -> bool:
        """Rows can join a running batch when every cache layer is a plain growing one (not sliding windows)."""
        return self.cache is None or all(type(layer) is DynamicLayer for layer in self.cache.layers)

    @torch.inference_mode()
    def join(self, prompts: Sequence[torch.Tensor], samplings: Sequence[Sampling] | None = None,
             budgets: Sequence[int] | None = None) -> list[int]:
        """Prefills ``prompts`` (each ``[1, L, H]`` input embeddings) and adds them to the batch, each with
        its own ``samplings`` (default: the decoder's) and grammar ``budgets``; returns their ids."""
        ids = list(range(self._next_id, self._next_id + len(prompts)))
        self._next_id += len(prompts)
        samplings = list(samplings or [self.sampling] * len(prompts))
        device = prompts[0].device
        if self._stops is None:
            self._stops = torch.tensor(self.stop_ids, dtype=torch.long, device=device)
            self._suppress = torch.tensor(self.suppress_ids, dtype=torch.long, device=device)
        if self.constraint is not None:
            self.constraint.add(ids, budgets)
        shared = [self.prefix is not None and self.prefix.starts(p) for p in prompts]
        for prefixed in (True, False):  # the rows after the shared prefix, then any that do not start with it
            group = [k for k, s in enumerate(shared) if s == prefixed]
            if group:
                cut = len(self.prefix) if prefixed else 0
                self._add(*self._prefill([prompts[k][:, cut:] for k in group], prefixed))
                self.rows += [_Row(ids[k], samplings[k], torch.Generator(device=device).manual_seed(samplings[k].seed)
                                   if samplings[k].temperature > 0 else None) for k in group]
        return ids

    def _prefill(self, prompts: Sequence[torch.Tensor], prefixed: bool):
        """Runs the model on ``prompts`` (after the shared prefix when ``prefixed``): cache, mask, last logits."""
        embeds, mask = left_pad(prompts)
        cache = None
        if prefixed:
            cache = self.prefix.expand(len(prompts))
            mask = torch.cat([mask.new_ones((len(prompts), len(self.prefix))), mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.cache, mask, out.logits[:, -1, :].float()

    def _add(self, cache, mask: torch.Tensor, logits: torch.Tensor) -> None:
        """Appends prefilled rows to the batch, left-padding the shorter of the two caches."""
        if self.cache is None:
            self.cache, self.mask, self.logits = cache, mask, logits
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_time(old.keys, length, 2), _pad_time(new.keys, length, 2)])
            old.values = torch.cat([_pad_time(old.values, length, 2), _pad_time(new.values, length, 2)])
        self.mask = torch.cat([_pad_time(self.mask, length, 1), _pad_time(mask, length, 1)])
        self.logits = torch.cat([self.logits, logits])

    def _keep(self, kept: torch.Tensor) -> torch.Tensor:
        """Keeps the rows where ``kept`` (bool, batch order) is true, in the cache too; their indices.

        A batch that newcomers keep joining may never drain, so nothing of a row may outlive it: its
        grammar matcher goes, and so do the cache's leading positions that no remaining row attends to
        (padding left of every row's first token), else the cache would grow with every step forever.
        Positions are counted from each row's mask, so cutting columns where all rows are padding
        changes no row's positions or attention."""
        keep = kept.nonzero().squeeze(-1)
        if self.constraint is not None:
            self.constraint.drop(r.id for r, k in zip(self.rows, kept.tolist(), strict=True) if not k)
        if not len(keep):
            self.rows, self.cache, self.mask, self.logits = [], None, None, None
            return keep
        self.cache.batch_select_indices(keep)
        self.mask, self.logits = self.mask[keep], self.logits[keep]
        self.rows = [self.rows[k] for k in keep.tolist()]
        padding = int((self.mask.cumsum(-1) == 0).sum(-1).min())  # leading columns that are padding in every row
        if padding and self.joinable:  # sliding-window layers keep their own window
            self.mask = self.mask[:, padding:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, padding:], layer.values[:, :, padding:]
        return keep

    @torch.inference_mode()
    def leave(self, rows: set[int]) -> None:
        """Rows that end before their answer does (a client went away): out of the batch and its cache."""
        if rows & set(self.ids):
            self._keep(torch.tensor([r.id not in rows for r in self.rows]))

    @torch.inference_mode()
    def step(self) -> list[int]:
        """Chooses every row's next token and runs the model on them; returns the ids of the rows that ended
        (a stop id, ``on_token`` saying so, or ``max_new_tokens``), which leave the batch."""
        scores = self.logits
        if len(self._suppress):
            scores[:, self._suppress] = float("-inf")
        if self.constraint is not None:
            scores = self.constraint.constrain(self.ids, scores)
        chosen = _choose(scores, self.rows)
        ended = torch.isin(chosen, self._stops)
        for k, (row, token) in enumerate(zip(self.rows, chosen.tolist(), strict=True)):
            row.count += 1
            if self.constraint is not None:
                self.constraint.advance(row.id, token)
            if ((self.on_token is not None and self.on_token(row.id, token))
                    or row.count >= row.sampling.max_new_tokens):
                ended[k] = True
        finished = [row.id for row, e in zip(self.rows, ended.tolist(), strict=True) if e]
        if finished:  # the finished rows leave the batch and its cache
            chosen = chosen[self._keep(~ended)]
        if not self.rows:
            return finished
        if self.constraint is not None:
            self.constraint.prefetch(self.ids)  # the grammar's next masks, made while the model runs
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        out = self.model(input_ids=chosen[:, None], attention_mask=self.mask, position_ids=positions, cache=self.cache,
                         use_cache=True)
        self.logits = out.logits[:, -1, :].float()
        return finished
