"""Training: examples and labels, the feature cache, checkpoints, resume, eval, import-checkpoint (several
processes: test_distributed)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modaverse import checkpoint
from modaverse.config import load_config
from modaverse.core.errors import WeightsError
from modaverse.data.conversation import IGNORE, messages, tokenize
from modaverse.data.records import parse_record, read_records
from modaverse.data.synth import synthesize
from modaverse.llm.prompt import Message, PromptBuilder, PromptError
from modaverse.training.examples import build_examples

from .conftest import IB, one_line_error, run_cli

#: A few-second run of the tiny profile: small batches, few steps, its own feature cache.
FAST = ["train.batch_size=4", "train.log_every=1", "train.lr=3e-3"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num=48, seed=5)
    return root


def _fast(synth, cache, *more):
    return [*FAST, f"train.data={synth / 'train.jsonl'}", f"train.feature_cache={cache}", *more]


def _builder(max_context=None):
    from modaverse.llm.prompt import marker_tokens
    from modaverse.tiny.tokenizer import tokenizer as tiny_tokenizer

    config = load_config("tiny", [f"prompt.max_context={max_context}"] if max_context else [])
    tok = tiny_tokenizer()
    tok.add_tokens(marker_tokens(config.encoder.modalities), special_tokens=True)
    return PromptBuilder(tok, config.prompt, capabilities=["text-to-image"], max_context=2048), tok


def test_labels_fall_exactly_on_assistant_turns():
    builder, tok = _builder()
    a1 = '{"text":"A red circle.","invocations":[]}'
    a2 = '{"text":"Here.","invocations":[{"capability":"text-to-image","prompt":"a red circle"}]}'
    msgs = [Message("user", "Describe <media>.", ("image",)), Message("assistant", a1),
            Message("user", "Now draw it."), Message("assistant", a2)]
    prompt, labels = tokenize(builder, msgs)
    assert len(prompt.slots) == 1 and labels.shape == prompt.input_ids.shape
    kept = labels[labels != IGNORE]
    assert tok.decode(kept) == a1 + tok.eos_token + a2 + tok.eos_token
    # every labelled position is the token itself (causal LMs shift internally)
    assert torch.equal(prompt.input_ids[labels != IGNORE], kept)
    assert (labels[prompt.slots[0].position] == IGNORE).item()


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
         "{% endif %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' + m['content'] "
         "+ '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")


@pytest.mark.parametrize(("template", "end"), [(CHATML, "<|im_end|>"), (GEMMA, "<end_of_turn>")],
                         ids=["chatml", "gemma"])
def test_the_end_of_turn_token_is_a_training_target(template, end):
    """Without it a chat model never learns to stop: it ran to the token cap after training."""
    builder, tok = _builder()
    tok.add_tokens(["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tok.chat_template = template
    builder = PromptBuilder(tok, builder.config, capabilities=["text-to-image"], max_context=2048)
    a1, a2 = '{"text":"A red circle.","invocations":[]}', '{"text":"Yes.","invocations":[]}'
    msgs = [Message("user", "Describe <media>.", ("image",)), Message("assistant", a1),
            Message("user", "Sure?"), Message("assistant", a2)]
    prompt, labels = tokenize(builder, msgs)
    assert tok.decode(labels[labels != IGNORE]) == a1 + end + a2 + end
    assert builder.end_of_turn_ids == [tok.convert_tokens_to_ids(end)]


def test_long_history_is_trimmed_and_overlong_records_dropped():
    builder, tok = _builder(max_context=96)
    turn = [Message("user", "Describe this picture in detail please."), Message("assistant", '{"text":"ok"}')]
    convs = [(1, turn * 6, [], []), (2, turn, [], []),
             (3, [Message("user", "word " * 200), Message("assistant", '{"text":"x"}')], [], [])]
    examples, stats = build_examples(builder, convs)
    assert stats.records == 3 and stats.examples == 2 and stats.dropped == 1 and stats.dropped_lines == [3]
    assert stats.trimmed_turns > 0
    assert all(len(e) <= 96 for e in examples)
    # the target of the last exchange always survives whole
    kept = examples[0].labels[examples[0].labels != IGNORE]
    assert tok.decode(kept).endswith('{"text":"ok"}' + tok.eos_token)
    with pytest.raises(PromptError):
        tokenize(builder, convs[2][1])


def test_feature_cache_encodes_each_file_once(tmp_path, tiny_pipe):
    from modaverse.encoder.features import FeatureCache, file_key

    a = tmp_path / "a.png"
    shutil.copy(IB / "image_a.png", a)
    copy = tmp_path / "same-content.png"
    shutil.copy(a, copy)
    items = [(file_key(p, "image"), p, "image") for p in (a, copy)] + [
        (file_key(IB / "audio_16k.wav", "audio"), IB / "audio_16k.wav", "audio")]
    assert items[0][0] == items[1][0]  # keyed by content, not name
    cache = FeatureCache(tmp_path / "cache", "fp")
    assert cache.ensure(items, tiny_pipe.encoder) == 2
    again = FeatureCache(tmp_path / "cache", "fp")  # a new run reads the shards from disk
    assert again.ensure(items, tiny_pipe.encoder) == 0
    feats = again.get([items[2][0], items[0][0]])
    direct = tiny_pipe.encoder.encode([tiny_pipe.encoder.load(IB / "audio_16k.wav"), tiny_pipe.encoder.load(a)])
    torch.testing.assert_close(feats, direct)
    assert not any(m.training for m in tiny_pipe.encoder.model.modules())
    # training reads rows lazily: a batch's rows, in the batch's order, the same values as the whole table
    from modaverse.encoder.features import LazyTable

    table = LazyTable(again, [items[0][0], items[2][0]])
    assert len(table) == 2
    torch.testing.assert_close(table[[1, 0, 1]], again.get([items[2][0], items[0][0], items[2][0]]))
    with pytest.raises(KeyError, match="1 feature"):
        LazyTable(again, ["image-" + "0" * 64])


def test_checkpoint_round_trip_and_strict_keys(tmp_path):
    from modaverse.pipeline.assistant import build_trainable

    config = load_config("tiny", ["checkpoint=null"])
    llm, adaptors = build_trainable(config, 32)
    tensors = checkpoint.trainable_tensors(adaptors, llm.model)
    with torch.no_grad():
        for t in tensors.values():
            t.add_(0.5)
    checkpoint.save(tmp_path / "ck", tensors, config, step=7, tokenizer_json=llm.tokenizer_json)
    llm2, adaptors2 = build_trainable(config, 32)
    manifest = checkpoint.load(tmp_path / "ck", adaptors2, llm2.model, config)
    assert manifest["step"] == 7 and manifest["structure_hash"] == checkpoint.structure_hash(config)
    for k, v in checkpoint.trainable_tensors(adaptors2, llm2.model).items():
        torch.testing.assert_close(v, tensors[k])
    # a model of another shape: the error names the keys
    other = load_config("tiny", ["checkpoint=null", "adaptor.projector=linear"])
    llm3, adaptors3 = build_trainable(other, 32)
    with pytest.raises(WeightsError, match=r"missing keys: adaptor\.projectors\.audio\.bias.*unexpected keys: "
                       r"adaptor\.projectors\.audio\.0\.bias"):
        checkpoint.load(tmp_path / "ck", adaptors3, llm3.model, other)
    lora = load_config("tiny", ["checkpoint=null", "trainable.llm=lora"])
    llm4, adaptors4 = build_trainable(lora, 32)
    with pytest.raises(WeightsError, match="trained with trainable="):
        checkpoint.load(tmp_path / "ck", adaptors4, llm4.model, lora)
    with pytest.raises(WeightsError, match="no such checkpoint folder"):
        checkpoint.resolve(tmp_path / "nowhere")


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / checkpoint.WEIGHTS))


def test_train_learns_saves_and_refuses_to_mix_runs(synth, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--config", "tiny-train", "--output-dir", run, "--max-steps", "12",
                *[f"--set={s}" for s in _fast(synth, tmp_path / "cache", "train.eval_data=null",
                                              "train.save_every=5")])
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["processes"] == 1 and summary["data"]["dropped"] == 0
    assert (run / "final" / checkpoint.MANIFEST).is_file() and (run / "config.yaml").is_file()
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000005", "step-000010"]
    assert (run / "latest").read_text().strip() == "step-000010"
    losses = [float(line.split(" loss ")[1].split()[0]) for line in r.stderr.splitlines() if " loss " in line]
    assert len(losses) == 12 and losses[-1] < losses[0]
    # the trained tensors really changed and the run's folder loads into the assistant
    from modaverse.pipeline.assistant import ModaVerse

    pipe = ModaVerse.from_config(load_config("tiny-train", [f"checkpoint={run}"]))
    got = {f"llm.{k}": v for k, v in pipe.llm.model.state_dict().items()}
    got |= {f"adaptor.{k}": v for k, v in pipe.adaptors.state_dict().items()}
    saved = _weights(run)
    assert saved.keys() <= got.keys()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    # a second run into the same folder is refused; nothing is touched
    before = (run / "final" / checkpoint.WEIGHTS).read_bytes()
    r = run_cli("train", "--config", "tiny-train", "--output-dir", run, "--max-steps", "2",
                *[f"--set={s}" for s in _fast(synth, tmp_path / "cache")])
    one_line_error(r, str(run), "already holds a training run", "--resume")
    assert (run / "final" / checkpoint.WEIGHTS).read_bytes() == before
    # (--resume into a folder with no checkpoint starts the run: test_short_runs_are_short_and_restart_cleanly)


def test_killed_run_resumes_to_the_same_weights(synth, tmp_path):
    sets = _fast(synth, tmp_path / "cache", "train.eval_data=null", "train.save_every=10", "train.log_every=50",
                 "train.max_steps=80")
    args = ["--config", "tiny-train", *[f"--set={s}" for s in sets]]
    whole = tmp_path / "whole"  # the uninterrupted run, in this process (the command runs the killed one)
    from modaverse.training.recipe import train

    train(load_config("tiny-train", sets), output_dir=whole, progress=False)

    cut = tmp_path / "cut"
    exe = Path(sys.executable).parent / "modaverse"
    proc = subprocess.Popen([str(exe), "train", *args, "--output-dir", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (cut / "step-000020").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "final").exists(), "the run finished before it could be killed"
    r = run_cli("train", *args, "--output-dir", cut, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    assert json.loads((cut / "summary.json").read_text())["resumed_from_step"] >= 20
    a, b = _weights(whole), _weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_invocations_cli(synth, tmp_path):
    from modaverse.training.recipe import train

    run = tmp_path / "run"  # a short run to score, trained in this process
    train(load_config("tiny-train", _fast(synth, tmp_path / "cache", "train.eval_data=null", "train.max_steps=3")),
          output_dir=run, progress=False)
    r = run_cli("eval", "invocations", "--data", synth / "test.jsonl", "--config", "tiny-train",
                "--checkpoint", run, "--set", f"train.feature_cache={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    n = len(read_records(synth / "test.jsonl"))
    assert result["items"] == n
    assert 0 <= result["prompt_exact_match"] <= result["capability_accuracy"] <= 1
    assert sum(v["items"] for v in result["per_capability"].values()) == n
    forms = result["per_form"]
    assert sum(forms[f]["items"] for f in ("text-only", "media", "multi-turn")) == n
    assert forms["media-bearing"]["items"] == forms["media"]["items"] + forms["multi-turn"]["items"] > 0
    # several files, each scored on its own by file name: a synthetic set's two held-out splits, and the
    # test split without ids, which scores the same (BLEU was keyed by id, so every id-less record collided
    # on None and only the last was scored); every mistake can be written, with its split
    bare = synth / "test-no-ids.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "id"}) + "\n"
                            for line in (synth / "test.jsonl").read_text().splitlines()))
    mistakes = tmp_path / "mistakes.jsonl"
    r = run_cli("eval", "invocations", "--data", synth / "test.jsonl", synth / "shifted.jsonl", bare, "--config",
                "tiny-train", "--checkpoint", run, "--set", f"train.feature_cache={tmp_path / 'cache'}",
                "--mistakes", mistakes)
    assert r.returncode == 0, r.stderr
    splits = json.loads(r.stdout)["splits"]
    assert splits["test"]["per_form"] == forms and splits["shifted"]["items"] == len(read_records(synth / "shifted.jsonl"))
    no_ids = splits["test-no-ids"]
    assert no_ids["prompt_bleu"] == result["prompt_bleu"] and no_ids["items"] == n
    wrong = [json.loads(x) for x in mistakes.read_text().splitlines()]
    assert len(wrong) == sum(r["mistakes"] for r in splits.values())
    bare_wrong = [w for w in wrong if w["split"] == "test-no-ids"]
    assert len(bare_wrong) == round(n * (1 - no_ids["prompt_exact_match"]))
    assert all(w["id"] is None and 1 <= w["line"] <= n for w in bare_wrong)
    one_line_error(run_cli("eval", "invocations", "--data", synth / "test.jsonl", synth / "test.jsonl"),
                   "share a name")
    one_line_error(run_cli("eval", "invocations", "--data", synth / "test.jsonl", "--checkpoint",
                            tmp_path / "nothing"), "no such checkpoint folder")


def test_shipped_tiny_checkpoint_answers_synthetic_inputs(tmp_path):
    """The offline default is trained: on new synthetic inputs it picks the right generator and prompt."""
    from modaverse.evaluation.invocations import evaluate_invocations

    root = tmp_path / "held-out"
    synthesize(root, num=120, seed=1234, test_fraction=1.0, shifted_fraction=0.0)
    config = load_config("tiny", [f"train.feature_cache={tmp_path / 'cache'}"])
    assert config.checkpoint and Path(config.checkpoint).is_dir()
    result = evaluate_invocations(config, root / "test.jsonl", progress=False)
    assert result["items"] == 120
    assert result["capability_accuracy"] >= 0.95
    # The README's figures are on 221 media-bearing items per split (72% exact in distribution);
    # the 87 here vary by several points around that (69% when measured).
    assert result["per_form"]["media-bearing"]["prompt_exact_match"] >= 0.6
    # No input needed: nearly free (94% of 33 when measured; the misses name two objects).
    assert result["per_form"]["text-only"]["prompt_exact_match"] >= 0.85
    assert result["prompt_exact_match"] <= result["prompt_bleu"] <= 1  # near misses still earn BLEU credit
    untrained = evaluate_invocations(config.model_copy(update={"checkpoint": None}), root / "test.jsonl",
                                     progress=False, limit=20)
    assert untrained["prompt_exact_match"] == 0 and untrained["prompt_bleu"] < 0.2


def test_learning_benchmark_breaks_held_out_scores_down_by_form_modality_and_shifted_axis(tmp_path):
    out = tmp_path / "learning.json"
    r = subprocess.run([sys.executable, "benchmarks/learning.py", "--config", "tiny", "--eval-dir", tmp_path / "eval",
                        "--num", "24", "--out", out], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    manifest = [json.loads(x) for x in (tmp_path / "eval" / "media.jsonl").read_text().splitlines()]
    for split in ("test", "shifted"):
        forms = report[split]["per_form"]
        modalities = report[split]["media_bearing_exact_by_modality"]
        assert sum(m["items"] for m in modalities.values()) == forms["media-bearing"]["items"] > 0
    axes = report["shifted"]["media_bearing_exact_by_shifted_axis"]
    moved = {f"{m['modality']}: {a}" for m in manifest if m["split"] == "shifted" for a in m["params"]["shifted"]}
    assert set(axes) <= moved and all(0 <= a["prompt_exact_match"] <= 1 for a in axes.values())


def _official_state(config, lora_suffix: str, vocab: int):
    """A state dict in the official release's layout, for the tiny architecture."""
    torch.manual_seed(0)
    from modaverse.encoder.imagebind.config import ImageBindConfig

    h, r = config.llm.arch["hidden_size"], config.llm.lora.r
    dim = ImageBindConfig.from_encoder(config.encoder).out_embed_dim
    state = {"linear_proj.weight": torch.randn(h, dim), "linear_proj.bias": torch.randn(h)}
    for layer in range(config.llm.arch["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            base = f"LLM.base_model.model.model.layers.{layer}.self_attn.{proj}"
            state[f"{base}.lora_A{lora_suffix}.weight"] = torch.randn(r, h)
            state[f"{base}.lora_B{lora_suffix}.weight"] = torch.randn(h, r)
    state["LLM.base_model.model.model.embed_tokens.weight"] = torch.randn(vocab + 6, h)
    state["LLM.base_model.model.lm_head.weight"] = torch.randn(vocab + 6, h)
    return state


OFFICIAL_SET = ["--set", "checkpoint=null", "--set", "trainable.llm=lora", "--set", "adaptor.projector=linear",
                "--set", "adaptor.standardize=false", "--set", "adaptor.tokens_per_input=1",
                "--set", "encoder.modalities=[image,video,audio]"]


@pytest.mark.parametrize("suffix", ["", ".default"])
def test_import_official_checkpoint(tmp_path, suffix):
    from safetensors.torch import load_file

    from modaverse.pipeline.assistant import ModaVerse

    config = load_config("tiny", [s for s in OFFICIAL_SET if s != "--set"])
    state = _official_state(config, suffix, 512)
    src = tmp_path / "pytorch_model.pt"
    torch.save(state, src)
    out = tmp_path / "imported"
    r = run_cli("import-checkpoint", src, "--output", out, *OFFICIAL_SET)
    assert r.returncode == 0, r.stderr
    lora_tensors = config.llm.arch["num_hidden_layers"] * 4 * 2  # q/k/v/o, A and B
    assert f"{lora_tensors} LoRA tensors" in r.stdout and "audio, image, video" in r.stdout
    pipe = ModaVerse.from_config(config.model_copy(update={"checkpoint": str(out)}))
    for m in ("image", "video", "audio"):
        proj = pipe.adaptors.projectors[m]
        assert torch.equal(proj.weight, state["linear_proj.weight"]) and torch.equal(proj.bias, state["linear_proj.bias"])
    got = load_file(str(out / "weights.safetensors"))
    key = f"LLM.base_model.model.model.layers.1.self_attn.v_proj.lora_B{suffix}.weight"
    assert torch.equal(got["llm.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"], state[key])
    rows = got["llm.base_model.model.model.embed_tokens.rows"]
    embed = state["LLM.base_model.model.model.embed_tokens.weight"]
    ids = sorted(pipe.llm.marker_ids.items(), key=lambda kv: kv[1])
    table = pipe.llm.model.get_input_embeddings().weight  # inference merges the rows into the table
    for (tok, i), row in zip(ids, rows, strict=True):
        assert torch.equal(row, embed[-6] if not tok.startswith("</") else embed[-5]), tok
        assert torch.equal(table[i], row), tok
    kept = load_file(str(out / "official_tokens.safetensors"))
    assert torch.equal(kept["embed_tokens"], embed[-6:])
    # the imported weights answer through the normal pipeline
    turn = pipe("Describe <media>.", [IB / "image_a.png"], max_new_tokens=96)
    assert isinstance(turn.text, str)


def test_import_checkpoint_errors_name_the_problem(tmp_path):
    config = load_config("tiny", [s for s in OFFICIAL_SET if s != "--set"])
    state = _official_state(config, "", 512)
    state["LLM.base_model.model.model.layers.0.mlp.gate_proj.weight"] = torch.randn(2, 2)
    src = tmp_path / "bad.pt"
    torch.save(state, src)
    one_line_error(run_cli("import-checkpoint", src, "--output", tmp_path / "o", *OFFICIAL_SET),
                    "release keys not understood", "mlp.gate_proj")
    del state["LLM.base_model.model.model.layers.0.mlp.gate_proj.weight"]
    del state["LLM.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    torch.save(state, src)
    one_line_error(run_cli("import-checkpoint", src, "--output", tmp_path / "o", *OFFICIAL_SET),
                    "nothing in the release for", "layers.0.self_attn.q_proj.lora_A")
    torch.save({"something": torch.zeros(1)}, src)
    one_line_error(run_cli("import-checkpoint", src, "--output", tmp_path / "o", *OFFICIAL_SET),
                    "not the ModaVerse release layout")
    assert not (tmp_path / "o").exists()


def test_messages_follow_record_media_order():
    rec = parse_record({"messages": [
        {"role": "user", "text": "<media> vs <media>", "media": [{"path": "a.png"}, {"path": "b.wav"}]},
        {"role": "assistant", "meta_response": {"text": "x"}}]})
    msgs = messages(rec, ["image", "audio"])
    assert msgs[0].modalities == ("image", "audio") and msgs[1].text == '{"text":"x","invocations":[]}'


def test_short_runs_are_short_and_restart_cleanly(synth, tmp_path):
    """--max-steps bounds the conversations (so only their files are encoded), the end-of-run
    evaluation is bounded by train.eval_limit, and a folder's state never gives contradictory advice."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--config", "tiny-train", "--output-dir", run, "--max-steps", "2",
            *[f"--set={s}" for s in _fast(synth, cache, f"train.eval_data={synth / 'test.jsonl'}",
                                          "train.eval_limit=3")]]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    n = len(read_records(synth / "train.jsonl"))
    assert f"using 8 of {n} conversations" in r.stderr  # 2 steps x batch 4
    encoded = int(r.stderr.split("features: ")[1].split(" distinct files")[0])
    assert 0 < encoded <= 8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["items"] == 3 and "train.eval_limit" in r.stderr
    # finished, with no step checkpoint: neither flag is told to use the other
    for flag in ([], ["--resume"]):
        again = run_cli(*args, *flag)
        one_line_error(again, str(run), "--overwrite")
        assert "pass --resume" not in again.stderr
    # --overwrite with bad input is refused before the earlier run is touched
    one_line_error(run_cli(*args, "--overwrite", "--set", f"train.data={tmp_path / 'missing.jsonl'}"),
                    "missing.jsonl", "no such file")
    assert (run / "final" / checkpoint.MANIFEST).is_file() and (run / "summary.json").is_file()
    r = run_cli(*args, "--overwrite")
    assert r.returncode == 0 and "removed the earlier run (--overwrite)" in r.stderr, r.stderr
    # a folder with no checkpoint yet (a run stopped before its first save): --resume starts it
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text("name: interrupted\n")
    r = run_cli(*[a if a != run else fresh for a in args], "--resume")
    assert r.returncode == 0 and "no checkpoint yet, so the run starts from the beginning" in r.stderr, r.stderr
