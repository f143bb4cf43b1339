"""Batched decoding from prompt embeddings, with each row leaving the batch when it ends.

transformers' ``generate`` keeps a finished row in the batch, padded, until the longest one
ends: a batch of answers of 20 to 60 tokens pays for 60 steps of the full batch. Here a row
that ends is cut out of the batch and its key/value cache, so later steps cost what the
rows still decoding cost. Left padding, with position ids counted from each row's first
real token, makes a row decode exactly as it would alone (greedy). The loop takes an
optional constraint (the meta-response grammar: ``start``, ``advance``, ``constrain``) and
calls ``on_token`` with every token of every row as it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


def left_pad(prompts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[1, L_i, H]`` prompts as one ``[B, max L, H]`` batch padded on the left, and its attention mask."""
    length = max(p.shape[1] for p in prompts)
    first = prompts[0]
    embeds = first.new_zeros((len(prompts), length, first.shape[2]))
    mask = torch.zeros((len(prompts), length), dtype=torch.long, device=first.device)
    for b, p in enumerate(prompts):
        embeds[b, length - p.shape[1] :] = p[0]
        mask[b, length - p.shape[1] :] = 1
    return embeds, mask


def _choose(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    if sampling.temperature <= 0:
        return scores.argmax(-1)
    probs = torch.softmax(scores / sampling.temperature, -1)
    if sampling.top_p < 1:
        ordered, order = probs.sort(-1, descending=True)
        ordered[(ordered.cumsum(-1) - ordered) > sampling.top_p] = 0  # keep the smallest set reaching top_p
        return order.gather(-1, torch.multinomial(ordered, 1, generator=generator)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def decode(model, prompts: Sequence[torch.Tensor], sampling: Sampling, *, stop_ids: Sequence[int],
           suppress_ids: Sequence[int] = (), constraint=None,
           on_token: Callable[[int, int], bool] | None = None) -> None:
    """Decodes ``prompts`` (each ``[1, L, H]`` input embeddings) together.

    A row ends on a stop id, when ``on_token(row, token)`` returns True, or after
    ``max_new_tokens``; ``suppress_ids`` are never chosen.
    """
    embeds, mask = left_pad(prompts)
    device = embeds.device
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    suppress = torch.tensor(sorted(set(suppress_ids)), dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(sampling.seed) if sampling.temperature > 0 else None
    if constraint is not None:
        constraint.start(len(prompts))
    rows = list(range(len(prompts)))  # the original index of each row still in the batch
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.cache
    for step in range(sampling.max_new_tokens):
        scores = out.logits[:, -1, :].float()
        if len(suppress):
            scores[:, suppress] = float("-inf")
        if constraint is not None:
            scores = constraint.constrain(rows, scores)
        chosen = _choose(scores, sampling, generator)
        ended = torch.isin(chosen, stops) if len(stops) else torch.zeros_like(chosen, dtype=torch.bool)
        for k, (b, token) in enumerate(zip(rows, chosen.tolist(), strict=True)):
            if constraint is not None:
                constraint.advance(b, token)
            if on_token is not None and on_token(b, token):
                ended[k] = True
        if step == sampling.max_new_tokens - 1 or bool(ended.all()):
            return
        if bool(ended.any()):  # the finished rows leave the batch and its cache
            keep = (~ended).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            mask, chosen = mask[keep], chosen[keep]
            rows = [rows[k] for k in keep.tolist()]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
