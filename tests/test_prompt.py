"""Prompt assembly: soft-token slots and markers, inline order, multi-turn history, trimming."""

import pytest
import torch

from modaverse.config import PromptConfig
from modaverse.core.modality import MODALITIES
from modaverse.llm.prompt import (
    PLACEHOLDER,
    Message,
    PromptBuilder,
    PromptError,
    assemble_embeddings,
    marker_tokens,
    place_media,
)
from modaverse.tiny.tokenizer import tokenizer as tiny_tokenizer

ANSWER = '{"text":"ok","invocations":[]}'


def _tokenizer(compose="inline", template=None):
    tok = tiny_tokenizer()
    tok.add_tokens(marker_tokens(MODALITIES, compose), special_tokens=True)
    if template:
        tok.chat_template = template
    return tok


def _builder(compose="inline", k=1, max_context=2048, template=None, **cfg):
    tok = _tokenizer(compose, template)
    config = PromptConfig(compose=compose, max_context=max_context, system="You are a test.", **cfg)
    return tok, PromptBuilder(tok, config, tokens_per_input=k, capabilities=["text-to-image"])


def _ids(tok, *tokens):
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def test_place_media():
    assert place_media("describe", 2) == [0, 1, "describe"]  # no placeholder: inputs first (official order)
    assert place_media(f"compare {PLACEHOLDER} with {PLACEHOLDER}", 2) == ["compare ", 0, " with ", 1, ""]
    assert place_media("hi", 0) == ["hi"]
    with pytest.raises(PromptError, match="1 <media> placeholder.*2 input"):
        place_media(f"see {PLACEHOLDER}", 2)


@pytest.mark.parametrize("k", [1, 3])
def test_slots_sit_between_each_inputs_own_markers_in_inline_order(k):
    tok, b = _builder(k=k)
    msg = Message("user", f"Is {PLACEHOLDER} the sound of {PLACEHOLDER} or of {PLACEHOLDER}?",
                  ("audio", "image", "thermal"))
    p = b.build([msg])
    ids = p.input_ids.tolist()
    assert [s.media for s in p.slots] == [(0,), (1,), (2,)]
    for slot, modality in zip(p.slots, ["Audio", "Image", "Thermal"], strict=True):
        assert slot.length == k
        assert ids[slot.position - 1] == _ids(tok, f"<{modality}>")[0]
        assert ids[slot.position + k] == _ids(tok, f"</{modality}>")[0]
        assert ids[slot.position : slot.position + k] == [tok.pad_token_id] * k
    assert p.slots[0].position < p.slots[1].position < p.slots[2].position
    text = tok.decode(ids, skip_special_tokens=False)
    assert text.index("Is") < text.index("<Audio>") < text.index("sound") < text.index("<Image>") < text.index("or of")


def test_many_inputs_of_one_modality_and_inputs_before_text():
    tok, b = _builder()
    p = b.build([Message("user", "Which is louder?", ("audio", "audio", "audio", "video"))])
    assert [s.media for s in p.slots] == [(0,), (1,), (2,), (3,)]
    ids = p.input_ids.tolist()
    assert ids.count(_ids(tok, "<Audio>")[0]) == 3 and ids.count(_ids(tok, "<Video>")[0]) == 1
    text = tok.decode(ids, skip_special_tokens=False)
    assert text.index("</Video>") < text.index("Which is louder?")


def test_vicuna_fallback_renders_the_documented_format():
    tok, b = _builder()
    msgs = [Message("user", "Draw a cat", ()), Message("assistant", ANSWER), Message("user", "Again", ("image",))]
    text, spans = b.render(msgs)
    assert text == ("<s>You are a test.\n### Human: Draw a cat\n### Assistant:\n" + ANSWER + "</s>\n"
                    "### Human: <Image></Image> Again\n### Assistant:\n")
    assert [text[s:e] for s, e in spans] == [ANSWER + "</s>"]


def test_multi_turn_history_keeps_earlier_media_and_marks_targets():
    tok, b = _builder()
    msgs = [Message("user", "What is this?", ("image",)), Message("assistant", ANSWER),
            Message("user", f"And {PLACEHOLDER} plus {PLACEHOLDER}?", ("audio", "depth"))]
    p = b.build(msgs)
    assert [s.media for s in p.slots] == [(0,), (1,), (2,)]
    target = tok.decode(p.input_ids[p.target_mask].tolist(), skip_special_tokens=False)
    assert target == ANSWER + "</s>"
    # a training prompt ends with the assistant answer, which is all target
    train = b.build([*msgs, Message("assistant", ANSWER)], generation=False)
    assert tok.decode(train.input_ids[train.target_mask].tolist(), skip_special_tokens=False) == 2 * (ANSWER + "</s>")


def test_sum_composition_makes_one_slot_per_turn():
    tok, b = _builder(compose="sum")
    p = b.build([Message("user", f"{PLACEHOLDER} meets {PLACEHOLDER}", ("image", "audio"))])
    assert [s.media for s in p.slots] == [(0, 1)]
    ids = p.input_ids.tolist()
    assert ids[p.slots[0].position - 1] == _ids(tok, "<Media>")[0]
    assert _ids(tok, "<Image>")[0] not in ids and _ids(tok, "<Audio>")[0] not in ids


def test_assembled_embeddings_put_media_in_their_slots():
    tok, b = _builder(compose="sum", k=2)
    p = b.build([Message("user", "mix", ("image", "audio"))])
    table = torch.nn.Embedding(len(tok), 8)
    soft = [torch.randn(2, 8), torch.randn(2, 8)]
    emb = assemble_embeddings(table, p, soft)
    s = p.slots[0]
    torch.testing.assert_close(emb[0, s.position : s.position + 2], soft[0] + soft[1])
    rest = torch.ones(len(p), dtype=torch.bool)
    rest[s.position : s.position + 2] = False
    torch.testing.assert_close(emb[0, rest], table(p.input_ids)[rest])


def test_oldest_turns_are_trimmed_never_the_current_one():
    tok, b = _builder(max_context=160)
    history = []
    for i in range(6):
        history += [Message("user", f"turn {i} tell me about this picture", ("image",)), Message("assistant", ANSWER)]
    p = b.build([*history, Message("user", "and now?", ("audio",))], reserve=32)
    assert 0 < p.trimmed < 6
    assert len(p) <= 160 - 32
    assert p.media_offset == p.trimmed  # one image per dropped turn
    assert p.slots[-1].media == (6,)  # the current audio keeps its global index
    text = tok.decode(p.input_ids.tolist())
    assert "and now?" in text and "turn 0" not in text and "turn 5" in text
    with pytest.raises(PromptError, match=r"need \d+ tokens but only 28 fit"):
        b.build([Message("user", "word " * 200, ())], reserve=132)


def test_reserved_tokens_in_text_are_refused():
    tok, b = _builder()
    for text in ("look at <Image> this", "end </s> here"):
        with pytest.raises(PromptError, match="reserved token"):
            b.build([Message("user", text, ())])
    with pytest.raises(PromptError, match="prompt.system contains the reserved token"):
        PromptBuilder(tok, PromptConfig(system="use <Audio>"))


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
             "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")


def test_the_tokenizers_chat_template_is_used_when_present():
    tok, b = _builder(template=CHATML)
    assert not b.use_vicuna
    p = b.build([Message("user", "What is it?", ("video",)), Message("assistant", ANSWER),
                 Message("user", "More", ())])
    text = tok.decode(p.input_ids.tolist(), skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nYou are a test.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(p.input_ids[p.target_mask].tolist()) == ANSWER
    assert [s.media for s in p.slots] == [(0,)]


def test_templates_without_a_system_role_fold_it_into_the_first_turn():
    tok, b = _builder(template=NO_SYSTEM)
    text, _ = b.render([Message("user", "hi", ())])
    assert text == "[user] You are a test.\n\nhi\n[assistant] "


def test_vicuna_can_be_forced_over_a_chat_template():
    tok = _tokenizer(template=CHATML)
    b = PromptBuilder(tok, PromptConfig(template="vicuna", system="S"))
    assert b.render([Message("user", "hi", ())])[0] == "<s>S\n### Human: hi\n### Assistant:\n"
