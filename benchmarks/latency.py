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
from modaverse.pipeline import ModaVerse

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "imagebind"
STAGES = ["encode", "project", "prefill", "decode", "parse", "render"]

VICUNA_7B = {  # Llama-2-7B shapes (lmsys/vicuna-7b-v1.5 config.json)
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
}


def big_tokenizer(vocab_size: int = 32000):
    """A byte-level BPE with a Llama-sized vocabulary, trained on the local Python library."""
    from modaverse.llm import train_bpe, wrap_bpe

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
    from modaverse import meta
    from modaverse.constrain import MetaGrammar

    t = time.perf_counter()
    grammar = MetaGrammar(tokenizer, meta.BUILTIN_CAPABILITIES)
    compile_s = time.perf_counter() - t
    gen = torch.Generator().manual_seed(0)
    spent, done, proc, ids = [], 0, None, []
    first = 0.0
    for _ in range(steps):
        if proc is None:
            proc, ids = grammar.processor(max_new_tokens=10**9), []
        scores = torch.randn(1, grammar.vocab_size, generator=gen)
        t = time.perf_counter()
        scores = proc(torch.tensor([ids], dtype=torch.long), scores)
        spent.append(time.perf_counter() - t)
        first = first or spent[-1]
        tok = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=gen))
        if tok == tokenizer.eos_token_id:
            proc, done = None, done + 1
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
    args = p.parse_args()
    torch.manual_seed(0)
    if args.grammar_only:
        from modaverse.llm import tiny_tokenizer

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
