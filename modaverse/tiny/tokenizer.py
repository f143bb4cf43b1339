"""The tiny profile's tokenizer: a byte-level BPE trained in code on a fixed corpus (deterministic, offline).

Models built from ``llm.arch`` have no tokenizer of their own; the pipeline hands them this one
(or the copy a checkpoint saved), and the tiny generators' text encoders use it too.
"""

from __future__ import annotations

from functools import lru_cache

from modaverse.data.synth import corpus
from modaverse.llm.model import train_bpe, wrap_bpe

#: Text the in-code tokenizer is trained on: prose plus meta-responses, so JSON keys merge.
PROSE = (
    "A chat between a curious human and an artificial intelligence assistant.",
    "Describe the image. What sound is this? Generate a video of a dog running on the beach.",
    "Here is an image of a cat sitting on a red sofa in a bright living room.",
    "The quick brown fox jumps over the lazy dog while birds sing in the trees.",
    '{"text":"Here is the picture you asked for.","invocations":[{"capability":"text-to-image",'
    '"prompt":"a photo of a cat"}]}',
    '{"text":"A dog barks.","invocations":[{"capability":"text-to-audio","prompt":"a dog barking",'
    '"params":{"seed":1,"steps":25,"guidance":7.5,"duration":5.0}}]}',
    '{"text":"","invocations":[{"capability":"text-to-video","prompt":"waves on a beach at sunset",'
    '"params":{"frames":16,"width":256,"height":256}}]}',
    "### Human: ### Assistant: image audio video depth thermal motion sensor",
)


@lru_cache(maxsize=4)
def tokenizer_json(vocab_size: int = 512) -> str:
    """Prose plus meta-responses and every phrase of the synthetic set, so JSON keys and its words merge."""
    return train_bpe([*PROSE * 4, *corpus()], vocab_size)


def tokenizer(vocab_size: int = 512):
    return wrap_bpe(tokenizer_json(vocab_size))
