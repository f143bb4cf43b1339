"""Constrained decoding: the LLM can only emit meta-responses that :func:`meta.parse` accepts.

The grammar is the meta-response JSON Schema (:func:`modaverse.meta.json_schema`, built
from the config's capabilities) compiled by **llguidance**; at every step its token mask
is applied to the logits in a transformers ``LogitsProcessor``. llguidance was chosen over
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

import json
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch
from transformers import LogitsProcessor

from modaverse import meta
from modaverse.errors import ModaverseError

#: Tokens kept back to close the JSON: the longest forced tail (finishing a capability
#: name, the "prompt" key, one character, and the closing brackets) with margin.
WRAP_UP_TOKENS = 64
_BRACKETS = set("]}")


class MetaGrammar:
    """The meta-response grammar for one tokenizer and capability set (compile once, reuse)."""

    def __init__(self, tokenizer, capabilities: Sequence[str], vocab_size: int | None = None):
        import llguidance
        import llguidance.hf

        self.tokenizer = tokenizer
        self.capabilities = tuple(capabilities)
        self.vocab_size = vocab_size or len(tokenizer)
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab_size)
        schema = json.dumps(meta.json_schema(self.capabilities))
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        error = llguidance.LLMatcher.validate_grammar(self.grammar)
        if error:
            raise ModaverseError(f"meta-response grammar does not compile: {error}")

    @cached_property
    def token_texts(self) -> list[str]:
        return [self.tokenizer.decode([i]) for i in range(min(self.vocab_size, len(self.tokenizer)))]

    @cached_property
    def closing_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(closes a string, closes brackets): tokens like ``"`` / ``"}]}`` and ``]`` / ``}]}``."""
        string, brackets = (torch.zeros(self.vocab_size, dtype=torch.bool) for _ in range(2))
        for i, text in enumerate(self.token_texts):
            if text[:1] == '"' and set(text[1:]) <= _BRACKETS:
                string[i] = True
            elif text and set(text) <= _BRACKETS:
                brackets[i] = True
        return string, brackets

    def processor(self, max_new_tokens: int) -> MetaConstraint:
        return MetaConstraint(self, max_new_tokens)


class MetaConstraint(LogitsProcessor):
    """Masks logits to the grammar, one matcher per generation (batch size 1)."""

    def __init__(self, grammar: MetaGrammar, max_new_tokens: int):
        import llguidance

        self.grammar, self.max_new_tokens = grammar, max_new_tokens
        self.matcher = llguidance.LLMatcher(grammar.ll_tokenizer, grammar.grammar, log_level=0)
        self._start: int | None = None
        self._consumed = 0
        self._in_string = self._escaped = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != 1:
            raise ValueError("constrained decoding runs one sequence at a time")
        if self._start is None:
            self._start = input_ids.shape[1]  # generate() passes prompt ids (if any) plus new ones
        new = input_ids[0, self._start + self._consumed :].tolist()
        for tok in new:
            if not self.matcher.consume_token(tok):
                raise RuntimeError(f"grammar rejected token {tok}: {self.matcher.get_error()}")
            self._scan(self.grammar.token_texts[tok] if tok < len(self.grammar.token_texts) else "")
        self._consumed += len(new)
        scores.masked_fill_(~self._allowed().to(scores.device), float("-inf"))
        if self.max_new_tokens - self._consumed <= WRAP_UP_TOKENS:
            closing = self.grammar.closing_masks[0 if self._in_string else 1].to(scores.device)
            if torch.isfinite(scores[0, closing]).any():
                scores[0, ~closing] = float("-inf")
        return scores

    def _allowed(self) -> torch.Tensor:
        """The grammar's next-token mask as booleans.

        llguidance.torch is not used: importing it pulls in torch's inductor, and its apply
        helper is a torch.compile kernel whose first call compiles C++ for about 2 s (and needs
        a compiler). Unpacking the mask's bits with numpy takes microseconds.
        """
        mask = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(mask, bitorder="little")
        return torch.from_numpy(bits[: self.grammar.vocab_size].astype(bool))

    def _scan(self, text: str) -> None:
        """Tracks whether decoding is inside a JSON string (only ASCII quotes and backslashes matter)."""
        for c in text:
            if self._escaped:
                self._escaped = False
            elif self._in_string and c == "\\":
                self._escaped = True
            elif c == '"':
                self._in_string = not self._in_string
