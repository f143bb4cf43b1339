"""Text -> the text tower's token ids, with the check that keeps ImageBind's text head honest.

ImageBind's text head (CLIP's) embeds the position of the *largest token id* in each row: CLIP's
end-of-text token, the last id of its vocabulary. Under the causal mask only that position has
seen every word. A tokenizer whose largest id is an ordinary word (or that never appends the
end-of-text token) makes the head read a content word that cannot see the words after it, and
nothing fails: the embeddings are merely wrong. :class:`TextTokenizer` therefore refuses any
tokenizer whose end-of-text token is not the vocabulary's last id and appended to every text.

Rows are truncated to the tower's context length with the end-of-text token kept last, and
padded with id 0, as upstream's ``SimpleTokenizer`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modaverse.core.errors import ModaverseError

EOT = "<|endoftext|>"
SOT = "<|startoftext|>"


class TextTokenizer:
    """A ``tokenizers`` JSON checked against the text tower it feeds."""

    def __init__(self, tokenizer_json: str, context_length: int, vocab_size: int, source: str = "text tokenizer"):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises its own Exception subclasses for malformed JSON
            raise ModaverseError(f"{source}: not a tokenizers JSON ({str(e).splitlines()[0]})") from None
        self.context_length, self.source = context_length, source
        eot = self.tokenizer.token_to_id(EOT)
        if eot is None:
            raise ModaverseError(f"{source}: has no {EOT} token; ImageBind's text head reads that token's position")
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if eot != vocab_size - 1 or size != vocab_size:
            raise ModaverseError(f"{source}: {EOT} has id {eot} in a vocabulary of {size}, but the text tower "
                                 f"(text_vocab_size {vocab_size}) reads the largest id, so it must be {vocab_size - 1}, "
                                 "the last")
        probe = self.tokenizer.encode("a").ids
        if not probe or probe[-1] != eot:
            raise ModaverseError(f"{source}: does not end each text with {EOT} (its post-processor must append it)")
        self.eot = eot
        self.json = tokenizer_json

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), context_length]`` int64 ids, each row ending its text with the end-of-text id."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
            ids = enc.ids[: self.context_length]
            ids[-1] = self.eot  # truncated rows keep the token the head reads
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def word_level_json(texts: Sequence[str], vocab_size: int) -> str:
    """A lower-cased word-level tokenizer over ``texts``, sized for a text tower trained from scratch.

    Id 0 pads, then ``<unk>`` and the start token, the words by first appearance, unused filler ids,
    and the end-of-text token last: the head's contract (:class:`TextTokenizer`)."""
    import re

    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    words = list(dict.fromkeys(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())))
    specials = ["<pad>", "<unk>", SOT]
    room = vocab_size - len(specials) - 1
    if len(words) > room:
        raise ModaverseError(f"the captions use {len(words)} distinct words, but a text tower of text_vocab_size "
                             f"{vocab_size} has room for {room}; raise text_vocab_size in the architecture")
    vocab = {w: i for i, w in enumerate([*specials, *words, *(f"<unused{i}>" for i in range(room - len(words))), EOT])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])])
    return tok.to_str()
