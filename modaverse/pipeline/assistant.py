"""``ModaVerse``: instruction + media in, a :class:`Turn` (reply, invocations, outputs) out.

The three stages of the paper in one object, built from a config:

1. input: files -> ImageBind embeddings (:class:`~modaverse.encoder.embed.Encoder`) -> adaptors;
2. middle: prompt assembly with soft tokens -> LoRA LLM -> meta-response, decoded under
   the meta-response grammar so it always validates;
3. output: invocations rendered by the model zoo (:mod:`model_zoo`) into files, when an
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
from pathlib import Path

import torch
from pydantic import ValidationError

from modaverse.adaptors import Adaptors
from modaverse.config import MAX_NEW_TOKENS, MIN_NEW_TOKENS, Config, GenerationConfig, load_config
from modaverse.core.device import DTYPES
from modaverse.core.errors import ModaverseError
from modaverse.core.strict import reason
from modaverse.encoder.embed import Encoder
from modaverse.encoder.memo import EmbeddingLRU, content_key
from modaverse.llm.decode import Prefix
from modaverse.llm.model import LLM, load_llm, load_tokenizer, wrap_bpe
from modaverse.llm.prompt import Message, Prompt, PromptBuilder, assemble_embeddings, marker_tokens
from modaverse.media import MediaInput
from modaverse.media.sniff import check_file
from modaverse.meta import schema as meta
from modaverse.pipeline.session import Session
from modaverse.pipeline.turn import (
    Decoding,
    InputRef,
    Prepared,
    Reply,
    Request,
    RowStream,
    Turn,
)

log = logging.getLogger("modaverse")

#: Set-up work that can overlap the caller's next steps (llguidance releases the GIL).
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modaverse-setup")


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
    # a request may cap its reply under the grammar's least budget: the reply is then cut, and says so
    if max_new_tokens is not None and not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ModaverseError(f"max_new_tokens: {max_new_tokens} is outside 1..{MAX_NEW_TOKENS}")
    given = {k: v for k, v in (("temperature", temperature), ("seed", seed)) if v is not None}
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
        #: Embeddings of media already seen, by content (servers set one: clients resend their history).
        self.embedding_cache: EmbeddingLRU | None = None
        from model_zoo.zoo import Zoo

        self.zoo = Zoo.from_config(config)  # builds, does not load: generators load on first use
        self.capabilities = meta.capabilities(config.zoo)
        self.prompts = PromptBuilder(llm.tokenizer, config.prompt, tokens_per_input=config.adaptor.tokens_per_input,
                                     capabilities=self.capabilities, max_context=llm.max_context)
        #: Every token that ends an answer: the model's eos ids and the chat template's end of turn.
        self.stop_ids = sorted({*llm.eos_ids, *self.prompts.end_of_turn_ids})
        # The grammar's per-tokenizer set-up takes about a second at large vocabularies; it runs
        # beside whatever comes next (loading inputs, encoding) instead of before it.
        self._grammar = _BACKGROUND.submit(self._build_grammar)
        self._prefix: tuple[tuple, Prefix | None] | None = None  # (the weights it was made with, the cache)

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

    # -- the three stages ------------------------------------------------------------------------
    def load_inputs(self, inputs: Sequence[str | os.PathLike | MediaInput]) -> list[MediaInput]:
        return [i if isinstance(i, MediaInput) else self.encoder.load(i) for i in inputs]

    def embed(self, items: Sequence[MediaInput]) -> torch.Tensor:
        """``[len(items), D]`` embeddings in one encoder batch; with an ``embedding_cache``, only the unseen ones."""
        return self._embed_cached([(i.path, i.modality) for i in items], lambda todo: [items[k] for k in todo])

    def embed_files(self, files: Sequence[tuple[str | os.PathLike, str]]) -> torch.Tensor:
        """Files (path, modality) -> embeddings; a file the cache knows is neither decoded nor encoded."""
        return self._embed_cached(files, lambda todo: [self.encoder.load(*files[k]) for k in todo])

    def _embed_cached(self, files: Sequence[tuple[str | os.PathLike, str]],
                      load: Callable[[Sequence[int]], list[MediaInput]]) -> torch.Tensor:
        """Embeddings of ``files`` (path, modality); ``load(indices)`` gives the inputs of those to encode."""
        if not files:
            return torch.empty(0, self.encoder.dim)
        cache = self.embedding_cache
        if cache is None:
            return self.encoder.encode(load(range(len(files))))
        keys = [content_key(p, m) for p, m in files]
        found = [cache.get(k) for k in keys]
        todo = [k for k, f in enumerate(found) if f is None]
        if todo:
            for k, e in zip(todo, self.encoder.encode(load(todo)), strict=True):
                found[k] = e
                cache.put(keys[k], e)
        return torch.stack(found)

    def project(self, modalities: Sequence[str], embeddings: torch.Tensor) -> list[torch.Tensor]:
        """Each input's soft tokens, ``[tokens_per_input, H]``, in the LLM's dtype."""
        if not len(modalities):
            return []
        return list(self.adaptors.project(embeddings, modalities))

    @torch.inference_mode()
    def prepare(self, instruction: str, inputs: Sequence[str | os.PathLike | MediaInput] = (),
                history: Sequence[Turn] = (), reserve: int = 0, embeddings: torch.Tensor | None = None,
                system: str | None = None) -> Prepared:
        """Stages before decoding: encode the inputs (unless ``embeddings`` already holds them),
        build the prompt (``system``: a client's text after the profile's system prompt), project into its slots."""
        check_inputs(instruction, inputs)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        items = self.load_inputs(inputs)
        current = embeddings if embeddings is not None else self.embed(items)
        timings["encode"] = time.perf_counter() - t

        messages, modalities, embs = [], [], []
        for turn in history:
            mods = tuple(i.modality for i in turn.inputs)
            messages += [Message("user", turn.instruction, mods), Message("assistant", turn.meta.to_json())]
            modalities += mods
            if turn.embeddings is None and turn.inputs:  # a history read back from JSON or sent by a client
                turn.embeddings = self.embed_files([(i.path, i.modality) for i in turn.inputs])
            embs.append(turn.embeddings if turn.inputs else torch.empty(0, self.encoder.dim))
        mods = tuple(i.modality for i in items)
        messages.append(Message("user", instruction, mods))
        modalities += mods
        embs.append(current)
        t = time.perf_counter()
        prompt, inputs_embeds = self.prepare_messages(messages, torch.cat(embs), reserve, system)
        timings["project"] = time.perf_counter() - t
        return Prepared(items, current, prompt, inputs_embeds, timings)

    @torch.inference_mode()
    def prepare_messages(self, messages: Sequence[Message], embeddings: torch.Tensor,
                         reserve: int = 0, system: str | None = None) -> tuple[Prompt, torch.Tensor]:
        """A conversation whose media are already embedded (``[inputs, D]``, in order) -> prompt + input embeddings."""
        prompt = self.prompts.build(messages, reserve=reserve, system=system)
        if prompt.trimmed:
            log.warning("dropped the %d oldest turn(s) to fit the %d-token context", prompt.trimmed,
                        self.prompts.max_context)
        modalities = [m for msg in messages for m in msg.modalities]
        skip = prompt.media_offset
        soft = [None] * skip + self.project(modalities[skip:], embeddings[skip:])
        return prompt, assemble_embeddings(self.llm.embed_tokens, prompt, soft)

    def settings(self, constrained: bool | None = None, max_new_tokens: int | None = None,
                 temperature: float | None = None, seed: int | None = None, top_p: float | None = None) -> Decoding:
        """A request's decoding settings, the config's ``generation:`` filling what it leaves out."""
        gen = self.config.generation
        return Decoding(gen.constrained if constrained is None else constrained,
                        max_new_tokens or gen.max_new_tokens,
                        gen.temperature if temperature is None else temperature,
                        seed if seed is not None else (gen.seed if gen.seed is not None else self.config.seed),
                        gen.top_p if top_p is None else top_p)

    @torch.inference_mode()
    def respond(self, inputs_embeds: torch.Tensor, *, constrained: bool | None = None,
                max_new_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
                on_text: Callable[[str], None] | None = None) -> Reply:
        """Decodes a prepared prompt into a meta-response (the middle stage on its own)."""
        (reply,) = self.respond_batch([inputs_embeds], self.settings(constrained, max_new_tokens, temperature, seed),
                                      [on_text])
        if isinstance(reply, ModaverseError):
            raise reply
        return reply

    @torch.inference_mode()
    def respond_batch(self, prompts: Sequence[torch.Tensor], settings: Decoding,
                      on_texts: Sequence[Callable[[str], None] | None] | None = None) -> list[Reply | ModaverseError]:
        """Decodes several prepared prompts together, one padded batch; each row ends on its own.

        Greedy rows decode exactly as they would alone. A row whose answer cannot be parsed gets
        its error in its place; the others are unaffected.
        """
        session = self.session(settings)
        session.join(range(len(prompts)), prompts, on_texts or [None] * len(prompts))
        replies: dict[int, Reply | ModaverseError] = {}
        while len(session):
            replies |= {k: reply for k, reply, _ in session.step()}
        return [replies[k] for k in range(len(prompts))]

    def read_reply(self, raw: str, stream: RowStream, settings: Decoding) -> Reply | ModaverseError:
        """A finished row's text as a reply: parsed, timed, and why it ended; or why it is no meta-response."""
        timings = {"prefill": (stream.first or stream.end_time) - stream.start,
                   "decode": stream.end_time - (stream.first or stream.end_time), "new_tokens": len(stream.ids)}
        t = time.perf_counter()
        fallback = None
        cut = len(stream.ids) >= settings.max_new_tokens and not (stream.ids and stream.ids[-1] in self.stop_ids)
        if stream.stopped is not None:  # a stop string ended the reply text: what came before it is the answer
            timings["parse"] = time.perf_counter() - t
            return Reply(meta.MetaResponse(text=stream.stopped[: meta.MAX_TEXT_CHARS]), raw, settings.constrained,
                         None, timings, "stop")
        try:
            response = meta.parse(raw, self.capabilities)
        except meta.MetaResponseError as e:
            if settings.constrained and cut and settings.max_new_tokens < MIN_NEW_TOKENS:
                timings["parse"] = time.perf_counter() - t  # a cap under the grammar's budget: cut, as asked
                text = meta.text_prefix(raw).rstrip("\ufffd")
                return Reply(meta.MetaResponse(text=text[: meta.MAX_TEXT_CHARS]), raw, True,
                             f"cut at max_new_tokens {settings.max_new_tokens}, before the meta-response closed",
                             timings, "length")
            if settings.constrained:
                return ModaverseError(f"constrained decoding produced an invalid meta-response ({e}); "
                                      f"raise generation.max_new_tokens (now {settings.max_new_tokens})")
            fallback = f"not a meta-response ({e}); kept as a plain text reply"
            response = meta.MetaResponse(text=raw.strip()[: meta.MAX_TEXT_CHARS])
        timings["parse"] = time.perf_counter() - t
        return Reply(response, raw, settings.constrained, fallback, timings, "length" if cut else "stop")

    @torch.inference_mode()
    def __call__(self, instruction: str, inputs: Sequence[str | os.PathLike | MediaInput] = (),
                 history: Sequence[Turn] = (), *, constrained: bool | None = None,
                 max_new_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
                 on_text: Callable[[str], None] | None = None, output_dir: str | os.PathLike | None = None) -> Turn:
        """Answers one request; with ``output_dir``, the invocations are rendered there by the zoo."""
        check_inputs(instruction, inputs, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        request = Request(instruction, inputs, history, on_text, output_dir)
        (turn,) = self.answer([request], self.settings(constrained, max_new_tokens, temperature, seed))
        if isinstance(turn, ModaverseError):
            raise turn
        return turn

    @torch.inference_mode()
    def answer(self, requests: Sequence[Request], settings: Decoding) -> list[Turn | ModaverseError]:
        """Several requests at once: their media encoded in one encoder batch, their prompts decoded in
        one batch (each row leaving it when its answer ends), then each one's invocations rendered. A
        request that fails gets its error in its place."""
        session = self.session(settings)
        out: dict[int, Turn | ModaverseError] = dict(session.admit(list(enumerate(requests))))
        while len(session):
            for k, reply, prepared in session.step():
                out[k] = reply if isinstance(reply, ModaverseError) else self.finish(requests[k], prepared, reply)
        return [out[k] for k in range(len(requests))]

    @torch.inference_mode()
    def prefix(self) -> Prefix | None:
        """The shared prompt start's key/value cache, made again whenever the LLM's weights, device or
        mode changed since (training steps, loaded adapters), so it never answers for other weights."""
        model = self.llm.model
        params = list(model.parameters())
        state = (model.training, params[0].device, params[0].dtype, tuple((id(p), p._version) for p in params))
        if self._prefix is None or self._prefix[0] != state:
            ids = self.prompts.shared_prefix
            self._prefix = (state, Prefix(model, self.llm.embed_tokens(torch.tensor([ids]))) if ids else None)
        return self._prefix[1]

    def session(self, settings: Decoding) -> Session:
        """A running decode to feed requests into as they come (what the server's batcher keeps)."""
        return Session(self, settings)

    def finish(self, request: Request, ready: Prepared, reply: Reply) -> Turn:
        """The third stage: renders the invocations (when the request names a folder) into a turn."""
        timings = {**ready.timings, **reply.timings}
        t = time.perf_counter()
        outputs, errors = [], []
        if request.output_dir is not None and reply.meta.invocations:
            for res in self.zoo.render_invocations(reply.meta.invocations, Path(request.output_dir), ready.items):
                outputs += res.files
                if res.error:
                    errors.append(f"{res.capability}: {res.error}")
        timings["render"] = time.perf_counter() - t
        timings["prompt_tokens"] = len(ready.prompt)
        refs = [InputRef(str(i.path), i.modality) for i in ready.items]
        return Turn(request.instruction, refs, reply.meta, reply.raw, reply.constrained, reply.fallback, outputs,
                    errors, ready.prompt.trimmed, timings, ready.embeddings, reply.finish_reason)
