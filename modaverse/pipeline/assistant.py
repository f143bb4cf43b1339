"""``ModaVerse``: instruction + media in, a :class:`Turn` (reply, invocations, outputs) out.

The three stages of the paper in one object, built from a config:

1. input: files -> ImageBind embeddings (:class:`~modaverse.encoder.embed.Encoder`) -> adaptors;
2. middle: prompt assembly with soft tokens -> LoRA LLM -> meta-response, decoded under
   the meta-response grammar so it always validates;
3. output: invocations rendered by the model zoo (:mod:`modaverse.zoo`) into files, when an
   output folder is given; a failing generator is reported in the turn, others still render.

History is a list of earlier turns; each keeps its inputs' embeddings, so earlier media
stay in the conversation without being re-encoded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from pydantic import ValidationError

from modaverse.adaptors import Adaptors
from modaverse.config import Config, GenerationConfig, load_config
from modaverse.core.device import DTYPES
from modaverse.core.errors import ModaverseError
from modaverse.core.strict import reason
from modaverse.encoder.embed import Encoder
from modaverse.llm.model import LLM, load_llm, load_tokenizer, wrap_bpe
from modaverse.llm.prompt import Message, Prompt, PromptBuilder, assemble_embeddings, marker_tokens
from modaverse.media import MediaInput
from modaverse.media.sniff import check_file
from modaverse.meta import schema as meta

log = logging.getLogger("modaverse")

#: Set-up work that can overlap the caller's next steps (llguidance releases the GIL).
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modaverse-setup")


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


class _Stream:
    """A transformers streamer: records time to first token and streams the reply text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None] | None, constrained: bool):
        self.tok, self.on_text, self.constrained = tokenizer, on_text, constrained
        self.ids: list[int] = []
        self.start = self.end_time = time.perf_counter()
        self.first: float | None = None
        self.shown = ""

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:  # the prompt ids, sent once before decoding starts
            return
        if self.first is None:
            self.first = time.perf_counter()
        self.ids += value.tolist()
        if self.on_text is None:
            return
        raw = self.tok.decode(self.ids, skip_special_tokens=True)
        # A trailing U+FFFD is a character whose bytes have not all arrived yet: wait for them.
        text = (meta.text_prefix(raw) if self.constrained else raw).rstrip("\ufffd")
        if len(text) > len(self.shown) and text.startswith(self.shown):
            self.on_text(text[len(self.shown) :])
            self.shown = text

    def end(self) -> None:
        pass


def check_inputs(instruction: str, inputs: Sequence[str | os.PathLike | MediaInput] = (), *,
                 max_new_tokens: int | None = None, temperature: float | None = None,
                 seed: int | None = None) -> None:
    """Everything about a request that can be refused before any model runs, in one line.

    The CLI calls it before it builds a model, the server before it queues a request, and
    :meth:`ModaVerse.__call__` always: an empty request, decoding settings outside the
    ``generation:`` section's own bounds, and input paths that are missing, empty or not media
    (from their first bytes; decoding comes later).
    """
    if not instruction.strip() and not inputs:
        raise ModaverseError("empty request: give an instruction, inputs, or both")
    given = {k: v for k, v in (("max_new_tokens", max_new_tokens), ("temperature", temperature), ("seed", seed))
             if v is not None}
    try:
        GenerationConfig(**given)
    except ValidationError as e:
        raise ModaverseError(reason(e)) from None
    for item in inputs:  # paths; loaded inputs (and a server's uploads) are checked where they were read
        if isinstance(item, (str, os.PathLike)):
            check_file(Path(item))


def tokenizer_for(config: Config, run: str | os.PathLike | None = None):
    """The LLM's tokenizer: ``llm.model``'s own; for a model built from ``llm.arch``, the copy the
    checkpoint ``run`` saved, else the tiny kit's (the one every shipped tiny run was trained with)."""
    if config.llm.model is not None:
        return load_tokenizer(config.llm)
    from modaverse import checkpoint

    saved = checkpoint.saved_tokenizer(run) if run else None
    if saved:
        return wrap_bpe(saved)
    from modaverse.tiny import tokenizer

    return tokenizer.tokenizer()


def build_trainable(config: Config, encoder_dim: int, tokenizer=None) -> tuple[LLM, Adaptors]:
    """The LLM and adaptors, with ``requires_grad`` set as ``config.trainable`` says.

    Training and inference build them the same way, so a checkpoint's tensors (exactly the
    trainable ones) always have somewhere to go. ``tokenizer`` defaults to :func:`tokenizer_for`.
    """
    if tokenizer is None:
        tokenizer = tokenizer_for(config, config.checkpoint)
    llm = load_llm(config.llm, marker_tokens(config.encoder.modalities, config.prompt.compose), tokenizer,
                   config.trainable)
    torch.manual_seed(config.seed)
    adaptors = Adaptors.from_config(config.adaptor, config.encoder.modalities, encoder_dim, llm.hidden_size)
    adaptors.match_scale(llm.text_embedding_norm(), seed=config.seed)
    adaptors.to(llm.device, DTYPES[config.llm.dtype]).requires_grad_(config.trainable.adaptor == "full")
    return llm, adaptors


class ModaVerse:
    """The assistant. Build with :meth:`from_config`; call with an instruction and inputs."""

    #: diffusers-style: ``ModaVerse.check_inputs(...)`` refuses a bad request before any model is built.
    check_inputs = staticmethod(check_inputs)

    def __init__(self, config: Config, encoder: Encoder, adaptors: Adaptors, llm: LLM):
        self.config, self.encoder, self.adaptors, self.llm = config, encoder, adaptors, llm
        from modaverse.zoo.zoo import Zoo

        self.zoo = Zoo.from_config(config)  # builds, does not load: generators load on first use
        self.capabilities = meta.capabilities(config.zoo)
        self.prompts = PromptBuilder(llm.tokenizer, config.prompt, tokens_per_input=config.adaptor.tokens_per_input,
                                     capabilities=self.capabilities, max_context=llm.max_context)
        #: Every token that ends an answer: the model's eos ids and the chat template's end of turn.
        self.stop_ids = sorted({*llm.eos_ids, *self.prompts.end_of_turn_ids})
        # The grammar's per-tokenizer set-up takes about a second at large vocabularies; it runs
        # beside whatever comes next (loading inputs, encoding) instead of before it.
        self._grammar = _BACKGROUND.submit(self._build_grammar)

    @classmethod
    def from_pretrained(cls, checkpoint_path: str | os.PathLike, overrides: Sequence[str] = (), *,
                        config: str | os.PathLike = "tiny") -> ModaVerse:
        """A trained checkpoint (run, step or checkpoint folder) as it was trained: its encoder,
        adaptors, LLM, prompt and trainable settings come from the checkpoint; the rest of
        ``config`` (generation, zoo, devices) and then ``overrides`` apply."""
        from modaverse import checkpoint

        return cls.from_config(checkpoint.config_for(checkpoint_path, config, list(overrides)))

    @classmethod
    def from_config(cls, config: str | os.PathLike | Config = "tiny", overrides: Sequence[str] = (), *,
                    tokenizer=None) -> ModaVerse:
        """Builds every stage a config names; ``tokenizer`` overrides the LLM's own."""
        if not isinstance(config, Config):
            config = load_config(config, list(overrides))
        from modaverse import checkpoint

        if config.checkpoint:  # a checkpoint for another LLM fails here, before anything loads
            folder = checkpoint.resolve(config.checkpoint)
            checkpoint.check_llm(folder, checkpoint.read_manifest(folder), config)
        encoder = Encoder.from_config(config.encoder, config.media)
        llm, adaptors = build_trainable(config, encoder.dim, tokenizer)
        if config.checkpoint:
            checkpoint.load(config.checkpoint, adaptors, llm.model, config)
        llm.merge()
        adaptors.requires_grad_(False).eval()
        return cls(config, encoder, adaptors, llm)

    def _build_grammar(self):
        from modaverse.meta.grammar import MetaGrammar

        vocab = self.llm.model.get_output_embeddings().weight.shape[0]
        return MetaGrammar(self.llm.tokenizer, self.capabilities, vocab, self.stop_ids)

    @property
    def grammar(self):
        return self._grammar.result()

    @cached_property
    def _stop_at_separator(self):
        """The Vicuna template's ``###`` stop, built once: transformers would rebuild its matcher
        over the whole vocabulary on every request."""
        from transformers import StopStringCriteria

        return StopStringCriteria(self.llm.tokenizer, ["###"])

    # -- the three stages ------------------------------------------------------------------------
    def load_inputs(self, inputs: Sequence[str | os.PathLike | MediaInput]) -> list[MediaInput]:
        return [i if isinstance(i, MediaInput) else self.encoder.load(i) for i in inputs]

    def project(self, modalities: Sequence[str], embeddings: torch.Tensor) -> list[torch.Tensor]:
        """Each input's soft tokens, ``[tokens_per_input, H]``, in the LLM's dtype."""
        if not len(modalities):
            return []
        return list(self.adaptors.project(embeddings, modalities))

    @torch.inference_mode()
    def prepare(self, instruction: str, inputs: Sequence[str | os.PathLike | MediaInput] = (),
                history: Sequence[Turn] = (), reserve: int = 0) -> Prepared:
        """Stages before decoding: encode the inputs, build the prompt, project into its slots."""
        check_inputs(instruction, inputs)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        items = self.load_inputs(inputs)
        current = self.encoder.encode(items) if items else torch.empty(0, self.encoder.dim)
        timings["encode"] = time.perf_counter() - t

        messages, modalities, embs = [], [], []
        for turn in history:
            mods = tuple(i.modality for i in turn.inputs)
            messages += [Message("user", turn.instruction, mods), Message("assistant", turn.meta.to_json())]
            modalities += mods
            if turn.embeddings is None and turn.inputs:  # e.g. a history read back from JSON: encode again
                turn.embeddings = self.encoder.encode(
                    [self.encoder.load(i.path, i.modality) for i in turn.inputs])
            embs.append(turn.embeddings if turn.inputs else torch.empty(0, self.encoder.dim))
        mods = tuple(i.modality for i in items)
        messages.append(Message("user", instruction, mods))
        modalities += mods
        embs.append(current)
        t = time.perf_counter()
        prompt, inputs_embeds = self.prepare_messages(messages, torch.cat(embs), reserve)
        timings["project"] = time.perf_counter() - t
        return Prepared(items, current, prompt, inputs_embeds, timings)

    @torch.inference_mode()
    def prepare_messages(self, messages: Sequence[Message], embeddings: torch.Tensor,
                         reserve: int = 0) -> tuple[Prompt, torch.Tensor]:
        """A conversation whose media are already embedded (``[inputs, D]``, in order) -> prompt + input embeddings."""
        prompt = self.prompts.build(messages, reserve=reserve)
        if prompt.trimmed:
            log.warning("dropped the %d oldest turn(s) to fit the %d-token context", prompt.trimmed,
                        self.prompts.max_context)
        modalities = [m for msg in messages for m in msg.modalities]
        skip = prompt.media_offset
        soft = [None] * skip + self.project(modalities[skip:], embeddings[skip:])
        return prompt, assemble_embeddings(self.llm.embed_tokens, prompt, soft)

    @torch.inference_mode()
    def respond(self, inputs_embeds: torch.Tensor, *, constrained: bool | None = None,
                max_new_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
                on_text: Callable[[str], None] | None = None) -> Reply:
        """Decodes a prepared prompt into a meta-response (the middle stage on its own)."""
        gen = self.config.generation
        constrained = gen.constrained if constrained is None else constrained
        max_new_tokens = max_new_tokens or gen.max_new_tokens
        temperature = gen.temperature if temperature is None else temperature
        seed = seed if seed is not None else (gen.seed if gen.seed is not None else self.config.seed)
        raw, stream = self._generate(inputs_embeds, constrained, max_new_tokens, temperature, seed, on_text)
        timings = {"prefill": (stream.first or stream.end_time) - stream.start,
                   "decode": stream.end_time - (stream.first or stream.end_time), "new_tokens": len(stream.ids)}
        t = time.perf_counter()
        fallback = None
        try:
            response = meta.parse(raw, self.capabilities)
        except meta.MetaResponseError as e:
            if constrained:
                raise ModaverseError(f"constrained decoding produced an invalid meta-response ({e}); "
                                     f"raise generation.max_new_tokens (now {max_new_tokens})") from None
            fallback = f"not a meta-response ({e}); kept as a plain text reply"
            response = meta.MetaResponse(text=raw.strip()[: meta.MAX_TEXT_CHARS])
        timings["parse"] = time.perf_counter() - t
        ended = len(stream.ids) < max_new_tokens or (stream.ids and stream.ids[-1] in self.stop_ids)
        finish = "stop" if ended else "length"
        return Reply(response, raw, constrained, fallback, timings, finish)

    @torch.inference_mode()
    def __call__(self, instruction: str, inputs: Sequence[str | os.PathLike | MediaInput] = (),
                 history: Sequence[Turn] = (), *, constrained: bool | None = None,
                 max_new_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
                 on_text: Callable[[str], None] | None = None, output_dir: str | os.PathLike | None = None) -> Turn:
        """Answers one request; with ``output_dir``, the invocations are rendered there by the zoo."""
        check_inputs(instruction, inputs, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        max_new_tokens = max_new_tokens or self.config.generation.max_new_tokens
        ready = self.prepare(instruction, inputs, history, reserve=max_new_tokens)
        reply = self.respond(ready.inputs_embeds, constrained=constrained, max_new_tokens=max_new_tokens,
                             temperature=temperature, seed=seed, on_text=on_text)
        timings = {**ready.timings, **reply.timings}
        response = reply.meta
        t = time.perf_counter()
        outputs, errors = [], []
        if output_dir is not None and response.invocations:
            for res in self.zoo.render_invocations(response.invocations, Path(output_dir), ready.items):
                outputs += res.files
                if res.error:
                    errors.append(f"{res.capability}: {res.error}")
        timings["render"] = time.perf_counter() - t
        refs = [InputRef(str(i.path), i.modality) for i in ready.items]
        return Turn(instruction, refs, response, reply.raw, reply.constrained, reply.fallback, outputs, errors,
                    ready.prompt.trimmed, timings, ready.embeddings, reply.finish_reason)

    def _generate(self, inputs_embeds: torch.Tensor, constrained: bool, max_new_tokens: int,
                  temperature: float, seed: int, on_text) -> tuple[str, _Stream]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        tok = self.llm.tokenizer
        kwargs: dict = dict(max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=tok.pad_token_id,
                            do_sample=temperature > 0, suppress_tokens=sorted(self.llm.marker_ids.values()))
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=self.config.generation.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if constrained:
            kwargs["logits_processor"] = LogitsProcessorList([self.grammar.processor(max_new_tokens)])
        elif self.prompts.use_vicuna:
            kwargs["stopping_criteria"] = StoppingCriteriaList([self._stop_at_separator])
        stream = _Stream(tok, on_text, constrained)
        torch.manual_seed(seed)
        stream.start = time.perf_counter()
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        self.llm.model.generate(inputs_embeds=inputs_embeds, attention_mask=mask, streamer=stream, **kwargs)
        stream.end_time = time.perf_counter()
        raw = tok.decode(stream.ids, skip_special_tokens=True)
        if not constrained and self.prompts.use_vicuna:
            raw = raw.split("###")[0]
        return raw, stream
