"""Constrained decoding: the LLM can only emit meta-responses that :func:`meta.parse` accepts.

The grammar is the meta-response JSON Schema (:func:`modaverse.meta.schema.json_schema`, built
from the config's capabilities) compiled by **llguidance**; at every step its token mask
is applied to the logits by the decoder (:mod:`modaverse.llm.decode`), one matcher per row of
a batch. llguidance was chosen over
xgrammar (its wheel requires torch *and* triton, i.e. CUDA packages) and outlines-core
(regex-index construction over the whole vocabulary at start-up; no lazy masks); it is a
dependency-free wheel, computes masks lazily in tens of microseconds, and supports the
schema features used here (enum, min/max, multipleOf, maxLength with patterns).

A grammar alone does not bound length: a random model can stay inside a string until
``max_new_tokens`` runs out and leave the JSON open. So the processor *wraps up* when the
budget gets close: among the tokens the grammar allows, it keeps only those that close
the open value whenever there are any: a quote inside a string, ``]``/``}`` outside one.
Forced keys and required values are still produced by the grammar, so the document closes
within :data:`WRAP_UP_TOKENS` steps even with a character-level vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modaverse.core.errors import ModaverseError
from modaverse.meta import schema as meta

#: Tokens kept back to close the JSON: the longest forced tail (finishing a capability
#: name, the "prompt" key, one character, and the closing brackets) with margin.
WRAP_UP_TOKENS = 64
_BRACKETS = set(b"]}")
#: Where masks are computed ahead: llguidance releases the GIL, so this overlaps the model's step.
_MASKS = ThreadPoolExecutor(1, thread_name_prefix="modaverse-grammar")
#: Masks are made ahead only when a decoding step takes longer than this: handing work to a
#: thread costs about half a millisecond on a busy CPU (measured), more than a toy model's step.
OVERLAP_STEP_S = 0.003
#: llguidance's parallel mask filling pays from vocabularies this large (SmolLM2's 49k: about
#: even at batch 8 on two cores, and ahead on more); below, its thread hand-off costs more
#: than the masks (a 500-token vocabulary: 0.36 ms against 0.13 ms for 8 rows, measured).
PARALLEL_VOCAB = 32_000
FORMAT = "modaverse-token-table/2"


def tokenizer_fingerprint(tokenizer, vocab_size: int) -> str:
    """Identifies what the token table is made of: the vocabulary and its special tokens.

    A tokenizer loaded from a folder is identified by its ``tokenizer.json`` bytes (hashing
    the file is ten times faster than serialising a 262k vocabulary again), one built in
    code by its serialised form; the added tokens (markers) are part of the key either way.
    """
    h = hashlib.sha256(FORMAT.encode())
    source = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "tokenizer.json"
    if source.is_file():
        h.update(source.read_bytes())
    else:
        h.update(tokenizer.backend_tokenizer.to_str().encode())
    added = sorted((i, t.content, t.special) for i, t in tokenizer.added_tokens_decoder.items())
    h.update(json.dumps([added, vocab_size]).encode())
    return h.hexdigest()[:24]


@dataclass
class TokenTable:
    """Every token's bytes, the special ids and the wrap-up masks: the per-tokenizer work, done once.

    Building it walks the whole vocabulary (5 to 8 s at Gemma's 262k tokens); it is stored
    in the cache keyed by :func:`tokenizer_fingerprint`, so later processes read it in
    milliseconds and build llguidance's tokenizer from it directly.
    """

    blob: np.ndarray  # uint8, every token's bytes back to back
    offsets: np.ndarray  # int64 [vocab + 1]
    special: np.ndarray  # int64 ids of special tokens (markers included)
    closes_string: np.ndarray  # bool [vocab]: tokens like ``"`` / ``"}]}``
    closes_brackets: np.ndarray  # bool [vocab]: tokens like ``]`` / ``}]}``

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def token(self, i: int) -> bytes:
        return self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes()

    @classmethod
    def build(cls, tokenizer, vocab_size: int) -> TokenTable:
        """Token bytes as llguidance reads them from the tokenizer (byte-level pieces stay exact)."""
        import llguidance.hf

        ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        pieces = [ll.decode_bytes([i]) for i in range(vocab_size)]
        special = sorted({*tokenizer.all_special_ids, *(i for i in range(vocab_size) if ll.is_special_token(i)),
                          *(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)})
        offsets = np.zeros(vocab_size + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in pieces])
        closes_string, closes_brackets = (np.zeros(vocab_size, dtype=bool) for _ in range(2))
        special_set = set(special)
        for i, p in enumerate(pieces):
            if i in special_set or not p:
                continue
            if p[:1] == b'"' and set(p[1:]) <= _BRACKETS:
                closes_string[i] = True
            elif set(p) <= _BRACKETS:
                closes_brackets[i] = True
        blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        return cls(blob, offsets, np.array(special, dtype=np.int64), closes_string, closes_brackets)

    @classmethod
    def cached(cls, tokenizer, vocab_size: int) -> TokenTable:
        from modaverse.core.atomic import write_atomic
        from modaverse.core.cachedir import cache_dir

        path = cache_dir("grammar", f"{tokenizer_fingerprint(tokenizer, vocab_size)}.npz")
        if path.is_file():
            try:
                with np.load(path) as z:
                    return cls(**{k: z[k] for k in cls.__dataclass_fields__})
            except (OSError, ValueError, KeyError):  # a damaged cache file is rebuilt, never trusted
                pass
        table = cls.build(tokenizer, vocab_size)
        try:
            write_atomic(path, lambda tmp: tmp.write_bytes(_npz_bytes(table)))
        except OSError:  # a read-only cache only costs the rebuild next time
            pass
        return table

    def ll_tokenizer(self, tokenizer, eos_ids: Sequence[int]):
        """llguidance's tokenizer from the stored bytes (about 1 s at 262k tokens instead of 4 s)."""
        import llguidance

        blob, bounds = self.blob.tobytes(), self.offsets.tolist()
        pieces = [blob[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        special = self.special.tolist()

        class _Source:  # what llguidance.TokenizerWrapper reads
            eos_token_id = eos_ids[0]
            bos_token_id = tokenizer.bos_token_id
            tokens = pieces
            special_token_ids = special

            def __call__(self, text: str) -> list[int]:
                return tokenizer.encode(text, add_special_tokens=False)

        return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Source()), n_vocab=len(self),
                                      eos_token=list(eos_ids), slices=llguidance.LLTokenizer.json_slices())


def _npz_bytes(table: TokenTable) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: getattr(table, k) for k in TokenTable.__dataclass_fields__})
    return buf.getvalue()


class MetaGrammar:
    """The meta-response grammar for one tokenizer and capability set (compile once, reuse).

    ``eos_ids`` are the tokens that may end the document: the model's stops and the chat
    template's end-of-turn token.
    """

    def __init__(self, tokenizer, capabilities: Sequence[str], vocab_size: int | None = None,
                 eos_ids: Sequence[int] | None = None):
        import llguidance

        self.tokenizer = tokenizer
        self.capabilities = tuple(capabilities)
        self.vocab_size = vocab_size or len(tokenizer)
        eos_ids = list(eos_ids) if eos_ids else [tokenizer.eos_token_id]
        self.table = TokenTable.cached(tokenizer, self.vocab_size)
        self.ll_tokenizer = self.table.ll_tokenizer(tokenizer, eos_ids)
        self.eos_ids = frozenset(eos_ids)
        schema = json.dumps(meta.json_schema(self.capabilities))
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        error = llguidance.LLMatcher.validate_grammar(self.grammar)
        if error:
            raise ModaverseError(f"meta-response grammar does not compile: {error}")
        self.closing_masks = (torch.from_numpy(self.table.closes_string), torch.from_numpy(self.table.closes_brackets))
        self._fresh = llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)  # never advanced

    def matcher(self):
        """A matcher at the document's start: a copy of a fresh one (about 1 µs; building one takes about 1 ms)."""
        return self._fresh.deep_copy()

    def processor(self, max_new_tokens: int) -> MetaConstraint:
        return MetaConstraint(self, max_new_tokens)


class _Row:
    """One sequence of a batch: its matcher, how much of it has been consumed, and its JSON string state."""

    def __init__(self, grammar: MetaGrammar, budget: int):
        self.matcher, self.budget = grammar.matcher(), budget
        self.consumed = 0
        self.in_string = self.escaped = False
        self.done = False  # an end token was consumed: the row has ended

    def scan(self, piece: bytes) -> None:
        """Tracks whether decoding is inside a JSON string. Only ASCII quotes and backslashes
        matter, and UTF-8 never uses those bytes inside a multi-byte character."""
        for c in piece:
            if self.escaped:
                self.escaped = False
            elif self.in_string and c == 0x5C:
                self.escaped = True
            elif c == 0x22:
                self.in_string = not self.in_string


class MetaConstraint:
    """Masks logits to the grammar: one matcher per row of a batch, their masks computed together.

    A decoder adds rows as they join (:meth:`add`), reports each chosen token (:meth:`advance`),
    may start the next masks while its model runs (:meth:`prefetch`) and asks for the live
    rows' masks (:meth:`constrain`). Once a row has consumed an end token
    it is left alone. llguidance fills the whole batch's masks in parallel,
    outside the GIL; numpy unpacks them (llguidance.torch is not used: importing it pulls in
    torch's inductor, and its apply helper compiles C++ on first call).
    """

    def __init__(self, grammar: MetaGrammar, max_new_tokens: int):
        self.grammar, self.max_new_tokens = grammar, max_new_tokens
        self.rows: dict[int, _Row] = {}  # a decoder's row ids to their rows
        self._executor = None
        self._ahead: tuple[tuple[int, ...], Future] | None = None  # rows, and their masks being computed
        self._last, self._step_s = time.perf_counter(), 0.0  # when constrain was last called; the time between

    def add(self, rows: Sequence[int], budgets: Sequence[int] | None = None) -> None:
        """More rows, under the decoder's ids, each with its own matcher and token budget (default: the
        constraint's), near whose end the JSON is closed."""
        import llguidance

        for b, budget in zip(rows, budgets or [self.max_new_tokens] * len(rows), strict=True):
            self.rows[b] = _Row(self.grammar, budget)
        if len(self.rows) > 1 and self._executor is None and self.grammar.vocab_size >= PARALLEL_VOCAB:
            self._executor = llguidance.LLExecutor()

    def drop(self, rows: Iterable[int]) -> None:
        """Rows that left the batch: their matchers go, so a batch that never drains holds only its live rows'."""
        for b in rows:
            self.rows.pop(b, None)

    def advance(self, b: int, token: int) -> None:
        """Row ``b`` chose ``token``."""
        row = self.rows[b]
        if row.done:
            return
        if not row.matcher.consume_token(token):
            raise RuntimeError(f"grammar rejected token {token}: {row.matcher.get_error()}")
        row.scan(self.grammar.table.token(token) if token < len(self.grammar.table) else b"")
        row.consumed += 1
        if token in self.grammar.eos_ids:
            row.done = True

    def prefetch(self, rows: list[int]) -> None:
        """Starts computing the next masks of ``rows`` (their tokens just consumed) on the grammar's own
        thread, so they are made while the model runs its step; :meth:`constrain` collects them."""
        live = tuple(b for b in rows if not self.rows[b].done)
        if live and self._step_s > OVERLAP_STEP_S:
            self._ahead = (live, _MASKS.submit(self._allowed, list(live)))

    def constrain(self, rows: list[int], scores: torch.Tensor) -> torch.Tensor:
        """Masks ``scores[k]`` to what row ``rows[k]``'s grammar allows next (all live rows' masks at once)."""
        now = time.perf_counter()
        self._step_s, self._last = now - self._last, now
        live = [k for k, b in enumerate(rows) if not self.rows[b].done]
        if not live:
            return scores
        wanted = [rows[k] for k in live]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == tuple(wanted):
            allowed = ahead[1].result()
        else:  # rows joined since the prefetch (or none was made): all masks now, after any still running
            if ahead is not None:
                ahead[1].result()
            allowed = self._allowed(wanted)
        allowed = allowed.to(scores.device)
        for j, k in enumerate(live):
            row = self.rows[rows[k]]
            if row.budget - row.consumed <= WRAP_UP_TOKENS:
                closing = allowed[j] & self.grammar.closing_masks[0 if row.in_string else 1].to(scores.device)
                if (closing & torch.isfinite(scores[k])).any():
                    allowed[j] = closing
        index = torch.tensor(live, device=scores.device)
        scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
        return scores

    def _allowed(self, live: list[int]) -> torch.Tensor:
        """The grammar's next-token masks of the ``live`` rows, as booleans ``[len(live), vocab]``."""
        words = (self.grammar.vocab_size + 31) // 32
        masks = np.zeros((len(live), words), dtype=np.int32)
        if self._executor is None or len(live) == 1:  # the executor exists only for large vocabularies
            for k, b in enumerate(live):
                masks[k] = np.frombuffer(self.rows[b].matcher.compute_bitmask(), dtype=np.int32)[:words]
        else:
            from llguidance.numpy import fill_next_token_bitmask_par

            fill_next_token_bitmask_par(self._executor, [(self.rows[b].matcher, k) for k, b in enumerate(live)], masks)
        bits = np.unpackbits(masks.view(np.uint8), axis=1, bitorder="little")
        return torch.from_numpy(bits[:, : self.grammar.vocab_size].astype(bool))
