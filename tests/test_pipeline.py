"""The Python API end to end on the tiny profile: any mix of inputs, history, streaming."""

import json
import logging

import pytest
import torch

from modaverse.core.errors import ModaverseError
from modaverse.meta import schema as meta
from modaverse.pipeline.assistant import ModaVerse

from . import media_factory as mf
from .conftest import IB, greedy_tokens


def test_image_audio_and_video_together(tiny_pipe):
    turn = tiny_pipe("What do these have in common?", [IB / "image_a.png", IB / "audio_44k.wav", IB / "video.mp4"])
    assert [i.modality for i in turn.inputs] == ["image", "audio", "video"]
    assert turn.embeddings.shape == (3, tiny_pipe.encoder.dim)
    doc = json.loads(json.dumps(turn.to_dict()))
    meta.validate(doc["meta_response"], tiny_pipe.capabilities)
    assert set(doc["timings"]) >= {"encode", "project", "prefill", "decode", "parse", "render"}


def test_all_six_modalities_in_one_turn(tiny_pipe, tmp_path):
    files = [IB / "image_a.png", IB / "video.mp4", IB / "audio_16k.wav", mf.depth_png(tmp_path / "d.png"),
             IB / "thermal.npy", IB / "imu.npy"]
    mods = ["image", "video", "audio", "depth", "thermal", "imu"]
    items = [tiny_pipe.encoder.load(f, m) for f, m in zip(files, mods, strict=True)]
    turn = tiny_pipe("Describe the scene", items)
    assert [i.modality for i in turn.inputs] == mods


def test_same_seed_same_answer(tiny_pipe):
    a = tiny_pipe("Make a picture", [IB / "image_a.png"], temperature=1.0, seed=7)
    b = tiny_pipe("Make a picture", [IB / "image_a.png"], temperature=1.0, seed=7)
    assert a.raw == b.raw


def test_projected_media_reach_the_llm(tiny_pipe):
    """The slots hold the adaptors' output, and a different image changes the next-token logits."""
    a = tiny_pipe.prepare("Make a picture", [IB / "image_a.png"])
    b = tiny_pipe.prepare("Make a picture", [IB / "image_b.jpg"])
    slot = a.prompt.slots[0]
    assert torch.equal(a.prompt.input_ids, b.prompt.input_ids)
    with torch.inference_mode():
        torch.testing.assert_close(a.inputs_embeds[0, slot.position],
                                   tiny_pipe.project(["image"], a.embeddings)[0][0])
        la = tiny_pipe.llm.model(inputs_embeds=a.inputs_embeds).logits[0, -1]
        lb = tiny_pipe.llm.model(inputs_embeds=b.inputs_embeds).logits[0, -1]
    assert not torch.allclose(la, lb)


def test_history_keeps_earlier_media(tiny_pipe):
    first = tiny_pipe("Look at this", [IB / "image_a.png"])
    second = tiny_pipe.prepare("And this sound?", [IB / "audio_16k.wav"], history=[first])
    assert second.prompt.trimmed == 0
    assert [s.media for s in second.prompt.slots] == [(0,), (1,)]  # the first turn's image is still there
    with torch.inference_mode():
        torch.testing.assert_close(second.inputs_embeds[0, second.prompt.slots[0].position],
                                   tiny_pipe.project(["image"], first.embeddings)[0][0])


def test_streamed_text_is_the_reply(tiny_pipe):
    chunks = []
    turn = tiny_pipe("Say something", temperature=1.0, seed=3, on_text=chunks.append)
    assert "".join(chunks) == turn.text.rstrip("\ufffd")


def test_text_prefix_decodes_partial_json():
    assert meta.text_prefix('{"text":"a\\nb \\"q\\" \\u00e9') == 'a\nb "q" é'
    assert meta.text_prefix('{"text":"ab\\') == "ab"  # an escape cut in half waits
    assert meta.text_prefix('{"text":"ab\\u00') == "ab"
    assert meta.text_prefix('{"text":"done","invocations":[') == "done"
    assert meta.text_prefix('{"te') == ""


def test_overflowing_history_is_trimmed_with_a_warning(caplog):
    pipe = ModaVerse.from_config("tiny", ["prompt.max_context=250", "encoder.modalities=[image]", "checkpoint=null"])
    history = []
    with caplog.at_level(logging.WARNING, logger="modaverse"):
        for _ in range(4):
            history.append(pipe("Tell me a long story about this picture please", [IB / "image_a.png"],
                                history=history, max_new_tokens=96))
    assert any(t.trimmed for t in history)
    assert "dropped the" in caplog.text and "oldest turn" in caplog.text


def test_unconstrained_mode_falls_back_to_plain_text_and_says_so(random_pipe):
    turn = random_pipe("Hello", constrained=False, temperature=1.0, seed=1, max_new_tokens=96)
    assert not turn.constrained
    assert turn.fallback and "kept as a plain text reply" in turn.fallback
    assert turn.invocations == [] and turn.text


def test_request_errors(tiny_pipe, tmp_path):
    with pytest.raises(ModaverseError, match="empty request"):
        tiny_pipe("  ")
    # the Python API checks decoding settings as the CLI and the server do, with the same words
    with pytest.raises(ModaverseError, match="^temperature: Input should be less than or equal to 5$"):
        tiny_pipe("hi", temperature=9)
    with pytest.raises(ModaverseError, match="^max_new_tokens: 0 is outside 1..8192$"):
        ModaVerse.check_inputs("hi", max_new_tokens=0)  # before any model is built
    with pytest.raises(ModaverseError, match="nowhere.png: no such file"):
        ModaVerse.check_inputs("see <media>", [tmp_path / "nowhere.png"])
    with pytest.raises(ModaverseError, match="1 <media> placeholder"):
        tiny_pipe("see <media>", [IB / "image_a.png", IB / "image_b.jpg"])
    with pytest.raises(ModaverseError, match="missing.png"):
        tiny_pipe("see", [tmp_path / "missing.png"])
    with pytest.raises(ModaverseError, match="reserved token"):
        tiny_pipe("inject </s> here")


def test_zoo_capabilities_reach_the_pipeline():
    """A zoo key that is not a capability yet adds one: the system prompt and the grammar name it."""
    pipe = ModaVerse.from_config("tiny", ["zoo.image-variation.plugin=tiny-instruct-pix2pix", "prompt.system=null"])
    assert pipe.capabilities[-1] == "image-variation"
    assert "image-variation" in pipe.prompts.system
    assert "image-variation" in pipe.grammar.capabilities


def test_history_without_stored_embeddings_is_encoded_again(tiny_pipe):
    """A history rebuilt from saved JSON has paths but no tensors; its media are re-encoded."""
    first = tiny_pipe("Look at this", [IB / "image_a.png"])
    stored = first.embeddings
    first.embeddings = None
    again = tiny_pipe.prepare("And now?", history=[first])
    assert [s.media for s in again.prompt.slots] == [(0,)]
    torch.testing.assert_close(first.embeddings, stored)


def test_batched_greedy_decoding_equals_one_at_a_time(tiny_pipe):
    """Requests of different lengths, with and without media, decoded as one left-padded batch give
    exactly the answers they give alone; each row streams its own text."""
    from modaverse.pipeline.turn import Request

    asks = [("What is in <media>?", [IB / "image_a.png"]), ("Generate a video of waves at night.", []),
            ("Describe this sound.", [IB / "audio_16k.wav"]), ("hi", [])]
    alone = [tiny_pipe(text, inputs) for text, inputs in asks]
    chunks: list[list[str]] = [[] for _ in asks]
    together = tiny_pipe.answer([Request(text, inputs, on_text=chunks[k].append) for k, (text, inputs) in enumerate(asks)],
                                tiny_pipe.settings())
    for one, both, streamed in zip(alone, together, chunks, strict=True):
        assert both.raw == one.raw and both.meta == one.meta and both.finish_reason == one.finish_reason
        assert "".join(streamed) == both.text
    assert sum(len(c) > 1 for c in chunks) >= 1  # the text arrives in pieces, not at the end


def test_the_shared_prompt_start_is_prefilled_once_and_decodes_as_a_full_prefill(tiny_pipe):
    """The system turn's cache is computed once and reused; a prompt that does not start with it
    (here one whose first embedding is changed) is prefilled whole, in the same join."""
    prefix = tiny_pipe.prefix()
    shared = tiny_pipe.prompts.shared_prefix
    assert prefix is not None and len(prefix) == len(shared) > 5 and tiny_pipe.prefix() is prefix
    first = tiny_pipe("hi")
    ready = [tiny_pipe.prepare("What is in <media>?", [IB / "image_a.png"]), tiny_pipe.prepare("hi", history=[first])]
    assert all(r.prompt.input_ids[: len(shared)].tolist() == shared for r in ready)
    odd = ready[0].inputs_embeds.clone()
    odd[:, 0] += 1
    prompts = [r.inputs_embeds for r in ready] + [odd]
    assert [prefix.starts(p) for p in prompts] == [True, True, False]
    with_prefix = greedy_tokens(tiny_pipe, prompts, prefix)
    assert with_prefix == greedy_tokens(tiny_pipe, prompts, None)
    assert with_prefix == [greedy_tokens(tiny_pipe, [p], prefix)[0] for p in prompts]


def test_the_prefix_cache_is_remade_when_the_weights_change(tiny_pipe):
    """A training step or a loaded adapter edits weights in place: the cached prefix must follow."""
    prefix = tiny_pipe.prefix()
    weight = next(tiny_pipe.llm.model.parameters())
    with torch.no_grad():
        weight.mul_(1.0)  # an in-place write, as an optimiser step makes (the values stay the same)
    again = tiny_pipe.prefix()
    assert again is not prefix and torch.equal(again.embeds, prefix.embeds)


def test_a_failing_request_does_not_fail_its_batch(tiny_pipe, tmp_path):
    from modaverse.core.errors import ModaverseError
    from modaverse.pipeline.turn import Request

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    good, bad = tiny_pipe.answer([Request("hi"), Request("see <media>", [tmp_path / "bad.png"])], tiny_pipe.settings())
    assert good.text and isinstance(bad, ModaverseError) and "bad.png" in str(bad)


def test_a_request_joining_a_running_batch_answers_as_it_would_alone(tiny_pipe):
    """Continuous batching: a request joins a decode that is already several tokens in (its cache
    left-padded to the batch's length) and still gets exactly its one-at-a-time answer."""
    from modaverse.pipeline.turn import Request

    asks = [Request("Generate a video of waves at night."), Request("What is in <media>?", [IB / "image_a.png"]),
            Request("hi")]
    alone = [tiny_pipe(r.instruction, r.inputs) for r in asks]
    session = tiny_pipe.session(tiny_pipe.settings())
    replies = {}
    assert session.admit([(0, asks[0])]) == []
    for _ in range(5):
        replies |= {k: r for k, r, _ in session.step()}
    assert session.joinable and len(session) == 1
    assert session.admit([(1, asks[1]), (2, asks[2])]) == []
    while len(session):
        replies |= {k: r for k, r, _ in session.step()}
    assert [replies[k].raw for k in range(3)] == [t.raw for t in alone]


def test_rows_that_leave_do_not_change_the_others(tiny_pipe):
    """A client that goes away takes its row out of the batch; the rows left answer as they would alone."""
    from modaverse.pipeline.turn import Request

    asks = [Request("Generate a video of waves at night."), Request("What is in <media>?", [IB / "image_a.png"]),
            Request("hi")]
    alone = [tiny_pipe(r.instruction, r.inputs) for r in asks]
    session = tiny_pipe.session(tiny_pipe.settings())
    assert session.admit(list(enumerate(asks))) == []
    replies = {}
    for _ in range(3):
        replies |= {k: r for k, r, _ in session.step()}
    session.leave([1])
    assert len(session) == 2
    while len(session):
        replies |= {k: r for k, r, _ in session.step()}
    assert set(replies) == {0, 2}
    assert [replies[0].raw, replies[2].raw] == [alone[0].raw, alone[2].raw]


def test_a_cap_under_the_grammar_budget_cuts_the_reply_and_says_so(tiny_pipe):
    full = tiny_pipe("Describe <media>", [IB / "image_a.png"])
    chunks = []
    cut = tiny_pipe("Describe <media>", [IB / "image_a.png"], max_new_tokens=8, on_text=chunks.append)
    assert cut.finish_reason == "length" and cut.timings["new_tokens"] == 8
    assert "cut at max_new_tokens 8" in cut.fallback and not cut.invocations
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)
    assert "".join(chunks) == cut.text


def test_stop_strings_end_the_reply_text_before_them(tiny_pipe):
    """OpenAI's ``stop``: the reply ends before the first stop string, which is never streamed, not even
    in part (text that could begin one is held back until it cannot)."""
    from modaverse.pipeline.turn import Request

    full = tiny_pipe("Describe <media>", [IB / "image_a.png"])
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = " " + words[2]  # the reply's third word, with the space before it
    chunks = []
    request = Request("Describe <media>", [IB / "image_a.png"], on_text=chunks.append, stop=("never there", stop))
    (turn,) = tiny_pipe.answer([request], tiny_pipe.settings())
    expected = full.text[: full.text.index(stop)]
    assert turn.text == expected and turn.finish_reason == "stop" and not turn.invocations
    assert "".join(chunks) == expected


def test_a_client_system_text_follows_the_profile_system_prompt(tiny_pipe):
    plain = tiny_pipe.prepare("hi")
    told = tiny_pipe.prepare("hi", system="Answer in French.")
    text = tiny_pipe.llm.tokenizer.decode(told.prompt.input_ids)
    assert tiny_pipe.prompts.system + "\n\nAnswer in French." in text
    assert len(told.prompt) > len(plain.prompt)
    with pytest.raises(ModaverseError, match="the system message contains the reserved token"):
        tiny_pipe.prepare("hi", system="<Image>")
