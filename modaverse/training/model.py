"""The module training optimises: adaptors + LLM, fed cached ImageBind features.

It is the one ``nn.Module`` accelerate wraps (DDP, FSDP or DeepSpeed), so its parameter
names (``adaptor.*``, ``llm.*``) are the checkpoint's tensor names. The encoder is not part
of it: features come from :mod:`modaverse.encoder.features`, so ImageBind is never in training mode
and never in the optimiser.
"""

from __future__ import annotations

import torch
from torch import nn

from modaverse.llm.prompt import fill_slots
from modaverse.training.examples import Batch


class AlignmentModel(nn.Module):
    def __init__(self, adaptor: nn.Module, llm: nn.Module):
        super().__init__()
        self.adaptor, self.llm = adaptor, llm

    def forward(self, batch: Batch, features: torch.Tensor, every_parameter: bool = False) -> torch.Tensor:
        """The mean cross-entropy over the batch's assistant tokens. ``every_parameter`` adds every
        adaptor parameter at weight zero: FSDP2 needs a gradient for each on every process
        (:mod:`modaverse.training.sharding`)."""
        device = self.llm.get_input_embeddings().weight.device
        flat_rows = [r for rows in batch.media for r in rows]
        flat_mods = [m for mods in batch.modalities for m in mods]
        soft_per_example: list[list[torch.Tensor]] = [[] for _ in batch.media]
        if flat_rows:
            soft = self.adaptor.project(features[flat_rows], flat_mods)
            start = 0
            for b, rows in enumerate(batch.media):
                soft_per_example[b] = list(soft[start : start + len(rows)])
                start += len(rows)
        embeds = self.llm.get_input_embeddings()(batch.input_ids.to(device))
        embeds = fill_slots(embeds, batch.prompts, soft_per_example)
        out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask.to(device),
                       labels=batch.labels.to(device))
        if every_parameter:
            return out.loss + sum(p.sum() for p in self.adaptor.parameters() if p.requires_grad) * 0.0
        return out.loss
