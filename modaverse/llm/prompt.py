"""Conversations -> one token sequence with slots for media soft tokens.

A user message is text plus any number and mix of media inputs. Each input becomes its
modality's markers around ``tokens_per_input`` soft-token slots (``<Image> [slot] </Image>``)
at its own place in the text: ``<media>`` placeholders in the instruction say where, in
order; without placeholders the inputs precede the text, as in the research code. With
``compose: sum`` a message's inputs are summed into one slot between ``<Media>`` markers
(PandaGPT's "multimodal arithmetic").

The whole conversation is rendered to one string and tokenised once, so training labels and
inference prompts line up exactly; markers are added special tokens, so they survive
tokenisation as single ids and slots are inserted right after each opening marker. Earlier
turns keep their media. When the context overflows, the oldest turns are dropped (and
counted), never the current instruction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from modaverse.config import PromptConfig
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import PLACEHOLDER, markers

#: The markers of a summed (PandaGPT-style) group, which has no single modality.
SUM_MARKERS = ("<Media>", "</Media>")


class PromptError(ModaverseError):
    """An instruction that cannot be turned into a prompt (too long, reserved tokens, ...)."""


def marker_tokens(modalities: Iterable[str], compose: str = "inline") -> list[str]:
    """Every marker token the tokenizer needs for these modalities and composition."""
    toks = [t for m in modalities for t in markers(m)]
    return toks + list(SUM_MARKERS) if compose == "sum" else toks


@dataclass(frozen=True)
class Message:
    """One conversation message; a user message's ``modalities`` lists its inputs in order."""

    role: Literal["user", "assistant"]
    text: str
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slot:
    """``length`` soft tokens starting at ``position``, filled from these media inputs (summed)."""

    position: int
    length: int
    media: tuple[int, ...]


@dataclass
class Prompt:
    input_ids: torch.Tensor  # [L], slot positions hold the pad id
    slots: list[Slot]
    target_mask: torch.Tensor  # [L] bool: assistant tokens (training labels)
    media_offset: int = 0  # inputs of trimmed turns: index of the first media input still present
    trimmed: int = 0  # history turns dropped to fit the context

    def __len__(self) -> int:
        return int(self.input_ids.numel())


def default_system(capabilities: Sequence[str]) -> str:
    return ("You are ModaVerse, a multimodal assistant. The user may attach images, videos, audio, depth "
            "maps, thermal images and motion (IMU) recordings. Reply with a JSON object: \"text\" is your "
            "answer to the user and \"invocations\" lists the generators to call, each with a "
            f"\"capability\" (one of: {', '.join(capabilities)}) and a \"prompt\" describing the output.")


def place_media(text: str, n: int) -> list[str | int]:
    """Splits an instruction into text pieces and media indices, in reading order."""
    pieces = text.split(PLACEHOLDER)
    holes = len(pieces) - 1
    if holes == 0:
        return [*range(n), text] if n else [text]
    if holes != n:
        raise PromptError(f"the instruction has {holes} {PLACEHOLDER} placeholder(s) but {n} input(s) are attached")
    out: list[str | int] = [pieces[0]]
    for i, piece in enumerate(pieces[1:]):
        out += [i, piece]
    return out


class PromptBuilder:
    """Renders messages with the chat template (or the Vicuna fallback) and finds the slots."""

    def __init__(self, tokenizer, config: PromptConfig, *, tokens_per_input: int = 1,
                 capabilities: Sequence[str] = (), max_context: int | None = None):
        self.tok, self.config, self.k = tokenizer, config, tokens_per_input
        self.system = config.system if config.system is not None else default_system(capabilities)
        self.max_context = config.max_context or max_context or 4096
        self.use_vicuna = config.template == "vicuna" or not getattr(tokenizer, "chat_template", None)
        added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
        self.reserved = list(dict.fromkeys(t for t in [*tokenizer.all_special_tokens, *added] if t))
        self.special_ids = set(tokenizer.convert_tokens_to_ids(self.reserved))
        self._check_text(self.system, "prompt.system")

    @cached_property
    def end_of_turn_ids(self) -> list[int]:
        """The token that closes an assistant turn (``<|im_end|>``, ``<end_of_turn>``, ``</s>``).

        It is part of every training target, so a trained model ends its answer by itself,
        and decoding stops on it.
        """
        probe = [Message("user", "hi"), Message("assistant", "ok")]
        prompt = self._tokenize(probe, generation=False)
        return [int(i) for i, t in zip(prompt.input_ids, prompt.target_mask, strict=True)
                if t and int(i) in self.special_ids]

    @cached_property
    def shared_prefix(self) -> list[int]:
        """The token ids every generation prompt starts with (the system turn and what opens a user turn).

        Found as the common start of probes whose user text begins differently, so a template that
        merges the turn's opening with its first characters gives a shorter prefix, never a wrong one.
        A decoder computes its key/value cache once (:class:`~modaverse.llm.decode.Prefix`).
        """
        probes = [[Message("user", text)] for text in ("a", "Z", "0", " x", "?", "\n", "<", "Hello there")]
        common = self._tokenize(probes[0], generation=True).input_ids.tolist()
        for probe in probes[1:]:
            ids = self._tokenize(probe, generation=True).input_ids.tolist()[: len(common)]
            same = [a == b for a, b in zip(common, ids, strict=False)] + [False]
            common = common[: same.index(False)]
        return common

    # -- rendering -------------------------------------------------------------------------------
    def _check_text(self, text: str, what: str) -> None:
        for t in self.reserved:
            if t in text:
                raise PromptError(f"{what} contains the reserved token {t!r}; it cannot appear in text")

    def _user_content(self, msg: Message) -> str:
        self._check_text(msg.text.replace(PLACEHOLDER, ""), "the instruction")
        parts = place_media(msg.text, len(msg.modalities))
        if self.config.compose == "sum" and msg.modalities:
            first = next(i for i, p in enumerate(parts) if isinstance(p, int))
            parts = [p for i, p in enumerate(parts) if not isinstance(p, int) or i == first]
        out = []
        for p in parts:
            if isinstance(p, int):
                opening, closing = SUM_MARKERS if self.config.compose == "sum" else markers(msg.modalities[p])
                out.append(opening + closing)
            elif p.strip():
                out.append(p.strip())
        return " ".join(out)

    def system_text(self, extra: str | None = None) -> str:
        """The system turn: the profile's prompt, then a client's own text (an OpenAI system message)."""
        if not extra:
            return self.system
        self._check_text(extra, "the system message")
        return f"{self.system}\n\n{extra}"

    def render(self, messages: Sequence[Message], generation: bool = True,
               system: str | None = None) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text, plus the character span of every assistant message."""
        contents = [self._user_content(m) if m.role == "user" else m.text for m in messages]
        system = self.system_text(system)
        if self.use_vicuna:
            text, spans = (self.tok.bos_token or "") + system + "\n", []
            for m, c in zip(messages, contents, strict=True):
                if m.role == "user":
                    text += f"### Human: {c}\n### Assistant:\n"
                else:
                    spans.append((len(text), len(text) + len(c) + len(self.tok.eos_token or "")))
                    text += c + (self.tok.eos_token or "") + "\n"
            return text, spans
        chat = [{"role": m.role, "content": c} for m, c in zip(messages, contents, strict=True)]
        try:
            text = self.tok.apply_chat_template([{"role": "system", "content": system}, *chat],
                                                tokenize=False, add_generation_prompt=generation)
        except Exception:  # templates without a system role (e.g. Gemma): fold it into the first turn
            chat[0] = {**chat[0], "content": f"{system}\n\n{chat[0]['content']}"}
            text = self.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
        spans, start = [], 0
        for m, c in zip(messages, contents, strict=True):
            if m.role == "assistant":
                at = text.index(c, start)
                spans.append((at, at + len(c)))
                start = at + len(c)
        return text, spans

    # -- tokenisation ------------------------------------------------------------------------------
    def _tokenize(self, messages: Sequence[Message], generation: bool, system: str | None = None) -> Prompt:
        text, spans = self.render(messages, generation, system)
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        in_target = [any(s <= a and b <= e for s, e in spans) and b > a for a, b in offsets]
        for _, end in spans:  # the special token closing the turn is a target too (it teaches stopping)
            after = next((j for j, (a, _) in enumerate(offsets) if a >= end), None)
            if after is not None and ids[after] in self.special_ids:
                in_target[after] = True
        openings = {self.tok.convert_tokens_to_ids(t) for t in self._openings(messages)}
        groups = self._groups(messages)
        out_ids, mask, slots, g = [], [], [], 0
        pad = self.tok.pad_token_id
        for tid, t in zip(ids, in_target, strict=True):
            out_ids.append(tid)
            mask.append(t)
            if tid in openings:
                if g >= len(groups):
                    raise PromptError("more media markers than inputs in the rendered prompt (reserved token in the template?)")
                slots.append(Slot(len(out_ids), self.k, groups[g]))
                out_ids += [pad] * self.k
                mask += [False] * self.k
                g += 1
        if g != len(groups):
            raise PromptError(f"the chat template dropped media markers ({g} of {len(groups)} found)")
        return Prompt(torch.tensor(out_ids, dtype=torch.long), slots, torch.tensor(mask, dtype=torch.bool))

    def _openings(self, messages: Sequence[Message]) -> set[str]:
        if self.config.compose == "sum":
            return {SUM_MARKERS[0]}
        return {markers(m)[0] for msg in messages for m in msg.modalities}

    def _groups(self, messages: Sequence[Message]) -> list[tuple[int, ...]]:
        """Media indices of each slot, in the order the slots appear in the text."""
        groups, base = [], 0
        for msg in messages:
            if msg.role != "user" or not msg.modalities:
                continue
            order = [p for p in place_media(msg.text, len(msg.modalities)) if isinstance(p, int)]
            if self.config.compose == "sum":
                groups.append(tuple(base + i for i in order))
            else:
                groups += [(base + i,) for i in order]
            base += len(msg.modalities)
        return groups

    def build(self, messages: Sequence[Message], reserve: int = 0, generation: bool = True,
              system: str | None = None) -> Prompt:
        """Tokenises, dropping the oldest turns while the prompt plus ``reserve`` overflow; ``system`` is a
        client's text after the profile's system prompt."""
        if not messages or messages[-1].role != ("user" if generation else "assistant"):
            raise ValueError("a generation prompt ends with a user message; a training one with an assistant one")
        budget = self.max_context - reserve
        msgs, trimmed, media_offset = list(messages), 0, 0
        while True:
            prompt = self._tokenize(msgs, generation, system)
            if len(prompt) <= budget:
                break
            current = 1 if generation else 2
            if len(msgs) <= current:
                raise PromptError(
                    f"the instruction and its inputs need {len(prompt)} tokens but only {budget} fit "
                    f"(context {self.max_context}, {reserve} reserved for the answer)")
            cut = next((i for i in range(1, len(msgs) - current + 1) if msgs[i].role == "user"),
                       len(msgs) - current)
            media_offset += sum(len(m.modalities) for m in msgs[:cut])
            trimmed += sum(m.role == "user" for m in msgs[:cut])
            msgs = msgs[cut:]
        if media_offset:
            prompt.slots = [Slot(s.position, s.length, tuple(i + media_offset for i in s.media)) for s in prompt.slots]
        prompt.media_offset, prompt.trimmed = media_offset, trimmed
        return prompt


def fill_slots(embeddings: torch.Tensor, prompts: Sequence[Prompt],
               soft_tokens: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """``[B, L, H]`` token embeddings with every slot of ``prompts[b]`` replaced by its media.

    ``soft_tokens[b][i]`` is example ``b``'s media input ``i`` projected, ``[tokens_per_input, H]``;
    a slot over several inputs (``compose: sum``) gets their sum. Out of place, so gradients
    reach both the token embeddings and the projections (training uses the same path).
    """
    rows, cols, values = [], [], []
    for b, (prompt, soft) in enumerate(zip(prompts, soft_tokens, strict=True)):
        for slot in prompt.slots:
            values.append(torch.stack([soft[i] for i in slot.media]).sum(0))
            rows += [b] * slot.length
            cols += range(slot.position, slot.position + slot.length)
    if not values:
        return embeddings
    index = (torch.tensor(rows, device=embeddings.device), torch.tensor(cols, device=embeddings.device))
    return embeddings.index_put(index, torch.cat(values).to(embeddings.device, embeddings.dtype))


def assemble_embeddings(embed_tokens, prompt: Prompt, soft_tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[1, L, H]`` input embeddings of one prompt: token embeddings with its slots filled."""
    return fill_slots(embed_tokens(prompt.input_ids[None]), [prompt], [soft_tokens])
