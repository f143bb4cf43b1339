"""Constrained decoding: the grammar equals the parser, and every seed yields a valid answer."""

import json

import pytest
from hypothesis import given, settings

from modaverse.meta import schema as meta
from modaverse.meta.grammar import WRAP_UP_TOKENS, MetaGrammar
from modaverse.tiny.tokenizer import tokenizer as tiny_tokenizer

from .conftest import IB
from .strategies import documents


@pytest.fixture(scope="module")
def grammar():
    return MetaGrammar(tiny_tokenizer(), meta.BUILTIN_CAPABILITIES)


def _accepts(grammar, text: str) -> bool:
    import llguidance

    m = llguidance.LLMatcher(grammar.ll_tokenizer, grammar.grammar, log_level=0)
    ids = grammar.tokenizer(text, add_special_tokens=False)["input_ids"]
    return all(m.consume_token(t) for t in ids) and m.is_accepting()


@settings(max_examples=150, deadline=None)
@given(documents)
def test_every_valid_meta_response_is_in_the_grammar(grammar, doc):
    assert _accepts(grammar, meta.validate(doc).to_json())


def test_the_grammar_asks_for_both_keys_though_the_parser_defaults_them(grammar):
    """The model always writes the full form; hand-written or legacy answers may omit invocations."""
    assert not _accepts(grammar, '{"text":"hi"}')
    assert meta.parse('{"text":"hi"}').invocations == []


@pytest.mark.parametrize("bad", [
    '{"text":"","invocations":[{"capability":"text-to-3d","prompt":"x"}]}',
    '{"text":"","invocations":[{"capability":"text-to-image","prompt":"x","params":{"steps":151}}]}',
    '{"text":"","invocations":[{"capability":"text-to-image","prompt":" "}]}',
    '{"text":"","invocations":[],"path":"/etc/passwd"}',
])
def test_invalid_documents_are_outside_the_grammar(grammar, bad):
    assert not _accepts(grammar, bad)
    with pytest.raises(meta.MetaResponseError):
        meta.parse(bad)


def test_zoo_capabilities_enter_the_grammar():
    g = MetaGrammar(tiny_tokenizer(), meta.capabilities(["image-editing"]))
    assert _accepts(g, '{"text":"","invocations":[{"capability":"image-editing","prompt":"bluer"}]}')


def test_one_hundred_seeds_all_give_schema_valid_meta_responses(random_pipe):
    image = IB / "image_a.png"
    seen = {"invocations": 0, "wrap_up": 0}
    for seed in range(100):
        turn = random_pipe("Show me something like this", [image], temperature=1.0, seed=seed, max_new_tokens=96)
        assert turn.constrained and turn.fallback is None
        meta.validate(json.loads(turn.raw), random_pipe.capabilities)  # the raw text itself validates
        seen["invocations"] += len(turn.invocations)
        seen["wrap_up"] += turn.timings["new_tokens"] > 96 - WRAP_UP_TOKENS
    assert seen["invocations"] > 0  # the grammar lets the model call generators, not only reply
    assert seen["wrap_up"] > 0  # some answers needed the wrap-up to close in time


def test_greedy_decoding_that_never_closes_a_string_is_wrapped_up():
    """Greedy decoding of a random model often loops inside the reply (which seeds do depends on
    the vocabulary); wherever it does, the wrap-up still closes the JSON."""
    from modaverse.pipeline.assistant import ModaVerse

    wrapped = 0
    for seed in range(1, 5):
        pipe = ModaVerse.from_config("tiny", ["checkpoint=null", f"llm.seed={seed}"])
        turn = pipe("Describe it", [IB / "image_a.png"], temperature=0.0, max_new_tokens=96)
        meta.parse(turn.raw, pipe.capabilities)
        wrapped += turn.timings["new_tokens"] > 96 - WRAP_UP_TOKENS  # it had to wrap up
    assert wrapped > 0
