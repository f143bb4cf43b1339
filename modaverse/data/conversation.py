"""A record as the model sees it: prompt messages, media paths, and tokens with their labels.

Training, ``data validate`` and invocation scoring all read records this way. Each
conversation is rendered and tokenised once, with offsets, by the same
:class:`~modaverse.llm.prompt.PromptBuilder` inference uses, so labels line up with the prompt
by construction (the research code tokenised prompt and target separately and truncated
from the right, into the target). Labels fall only on assistant tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from modaverse.data.records import Record, media_path
from modaverse.llm.prompt import Message, Prompt, PromptBuilder
from modaverse.meta import schema as meta

#: The label of a token the loss ignores (everything but the assistant's replies).
IGNORE = -100


@dataclass(frozen=True)
class MediaItem:
    path: Path
    modality: str


def resolve_media(record: Record, data_file: str | os.PathLike) -> list[MediaItem]:
    """A record's media as paths with their modality (detected when the record does not say)."""
    from modaverse.media import detect_modality

    out = []
    for ref in record.media():
        path = media_path(ref, data_file)
        out.append(MediaItem(path, ref.modality or detect_modality(path)))
    return out


def messages(record: Record, modalities: Sequence[str]) -> list[Message]:
    """A record as prompt messages; assistant targets in the exact form the model must emit."""
    out, i = [], 0
    for m in record.messages:
        if m.role == "user":
            mods = tuple(modalities[i : i + len(m.media)])
            i += len(m.media)
            out.append(Message("user", m.text, mods))
        else:
            out.append(Message("assistant", m.meta_response.to_json()))
    return out


def training_builder(config, tokenizer, model_max: int | None) -> PromptBuilder:
    """Inference's prompt builder with ``train.max_length`` as the token budget (training and validation)."""
    prompt_cfg = config.prompt.model_copy(update={"max_context": config.train.max_length or config.prompt.max_context})
    return PromptBuilder(tokenizer, prompt_cfg, tokens_per_input=config.adaptor.tokens_per_input,
                         capabilities=meta.capabilities(config.zoo), max_context=model_max)


def tokenize(builder: PromptBuilder, msgs: Sequence[Message]) -> tuple[Prompt, torch.Tensor]:
    prompt = builder.build(msgs, generation=False)
    labels = torch.where(prompt.target_mask, prompt.input_ids, torch.full_like(prompt.input_ids, IGNORE))
    return prompt, labels


