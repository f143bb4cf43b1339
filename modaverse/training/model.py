"""The module training optimises: adaptors + LLM, fed cached ImageBind features.

It is the one ``nn.Module`` accelerate wraps (DDP, FSDP or DeepSpeed), so its parameter
names (``adaptor.*``, ``llm.*``) are the checkpoint's tensor names. The encoder is not part
of it: features come from :mod:`modaverse.features`, so ImageBind is never in training mode
and never in the optimiser.
"""

from __future__ import annotations

import torch
from torch import nn

from modaverse.prompt import fill_slots
from modaverse.training.examples import Batch


class AlignmentModel(nn.Module):
    def __init__(self, adaptor: nn.Module, llm: nn.Module):
        super().__init__()
        self.adaptor, self.llm = adaptor, llm

    def project(self, features: torch.Tensor, modalities: list[str]) -> torch.Tensor:
        """``[N, D]`` features -> ``[N, tokens_per_input, H]``, each through its modality's adaptor."""
        order, parts = [], []
        for m in dict.fromkeys(modalities):
            idx = [i for i, x in enumerate(modalities) if x == m]
            order += idx
            parts.append(self.adaptor(m, features[idx]))
        out = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    def forward(self, batch: Batch, features: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy over the batch's assistant tokens."""
        device = self.llm.get_input_embeddings().weight.device
        dtype = next(self.adaptor.parameters()).dtype
        flat_rows = [r for rows in batch.media for r in rows]
        flat_mods = [m for mods in batch.modalities for m in mods]
        soft_per_example: list[list[torch.Tensor]] = [[] for _ in batch.media]
        if flat_rows:
            soft = self.project(features[flat_rows].to(device, dtype), flat_mods)
            start = 0
            for b, rows in enumerate(batch.media):
                soft_per_example[b] = list(soft[start : start + len(rows)])
                start += len(rows)
        embeds = self.llm.get_input_embeddings()(batch.input_ids.to(device))
        embeds = fill_slots(embeds, batch.prompts, soft_per_example)
        out = self.llm(inputs_embeds=embeds, attention_mask=batch.attention_mask.to(device),
                       labels=batch.labels.to(device))
        return out.loss
