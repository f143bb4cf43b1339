"""Training-step throughput: cached ImageBind features against re-encoding every step, and the
real-size architecture per trainable-parts setting.

- ``tiny`` (CPU): synthetic data; one optimiser step on the same batches, (a) reading
  features from the cache as `modaverse train` does, (b) loading and encoding each
  sample's media one at a time inside the step, as the research code did.
- ``vicuna-7b`` (GPU): Llama-2-7B shapes with random weights, 32k vocabulary, per-modality
  linear adaptors from 1024-d features; samples/s and peak GPU memory for
  ``trainable.llm`` = lora, frozen (markers only) and full, bf16 autocast.

    python benchmarks/train.py                                   # tiny, CPU
    python benchmarks/train.py --profile vicuna-7b --device cuda --settings lora frozen
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _examples(config, data: Path, tokenizer=None):
    from modaverse.data.conversation import messages, resolve_media, training_builder
    from modaverse.data.records import read_records
    from modaverse.encoder.imagebind.config import ImageBindConfig
    from modaverse.pipeline.assistant import build_trainable
    from modaverse.training.examples import build_examples

    llm, adaptors = build_trainable(config, ImageBindConfig.from_encoder(config.encoder).out_embed_dim, tokenizer)
    builder = training_builder(config, llm.tokenizer, llm.max_context)
    records = read_records(data)
    media = [resolve_media(r, data) for r in records]
    flat = [m for ms in media for m in ms]
    rows, start = [], 0
    for ms in media:
        rows.append(list(range(start, start + len(ms))))
        start += len(ms)
    convs = [(i, messages(r, [m.modality for m in ms]), rw, [m.modality for m in ms])
             for i, (r, ms, rw) in enumerate(zip(records, media, rows, strict=True))]
    examples, _ = build_examples(builder, convs)
    return llm, adaptors, examples, flat


def _step(model, optimizer, batch, table):
    loss = model(batch, table)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def bench_tiny(args) -> dict:
    from modaverse.config import load_config
    from modaverse.data.synth import synthesize
    from modaverse.encoder.embed import Encoder
    from modaverse.encoder.features import FeatureCache, file_key
    from modaverse.training.examples import collate
    from modaverse.training.model import AlignmentModel

    tmp = Path(tempfile.mkdtemp())
    synthesize(tmp, num=args.batch_size * args.steps, seed=0, test_fraction=0.05)
    config = load_config("tiny-train", ["checkpoint=null", f"train.feature_cache={tmp / 'cache'}"])
    encoder = Encoder.from_config(config.encoder, config.media)
    llm, adaptors, examples, flat = _examples(config, tmp / "train.jsonl")
    model = AlignmentModel(adaptors, llm.model).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    pad = llm.tokenizer.pad_token_id
    batches = [examples[i : i + args.batch_size] for i in range(0, len(examples) - args.batch_size + 1, args.batch_size)]

    t = time.perf_counter()
    cache = FeatureCache.for_config(config)
    keys = [file_key(m.path, m.modality) for m in flat]
    cache.ensure(list(zip(keys, [m.path for m in flat], [m.modality for m in flat], strict=True)), encoder)
    table = cache.get(keys)
    fill = time.perf_counter() - t

    t = time.perf_counter()
    for b in batches:
        _step(model, optimizer, collate(b, pad), table)
    cached = time.perf_counter() - t

    t = time.perf_counter()
    for b in batches:  # the research code: every sample's media loaded and encoded inside the step
        live = table.clone()
        for e in b:
            for r in e.media:
                live[r] = encoder.encode([encoder.load(flat[r].path, flat[r].modality)])[0]
        _step(model, optimizer, collate(b, pad), live)
    reencode = time.perf_counter() - t
    n = len(batches) * args.batch_size
    return {"profile": "tiny", "device": "cpu", "threads": torch.get_num_threads(), "batch_size": args.batch_size,
            "steps": len(batches), "cache_fill_s": round(fill, 2),
            "samples_per_s": {"cached_features": round(n / cached, 1), "re_encoding": round(n / reencode, 1)},
            "speedup": round(reencode / cached, 1)}


def _one_setting(args, setting: str, data: Path) -> dict:
    """Everything built here is freed on return, before the next setting."""
    from latency import VICUNA_7B, big_tokenizer

    from modaverse.config import load_config
    from modaverse.encoder.imagebind.config import ImageBindConfig
    from modaverse.training.examples import collate
    from modaverse.training.model import AlignmentModel

    config = load_config("modaverse-7b", [
        "llm.model=null", f"llm.device={args.device}", "llm.dtype=bfloat16", "checkpoint=null",
        "encoder.weights=null", f"trainable.llm={setting}"])
    config.llm.arch = dict(VICUNA_7B)
    llm, adaptors, examples, flat = _examples(config, data, big_tokenizer())
    model = AlignmentModel(adaptors.float(), llm.model).train()
    if setting == "full":
        llm.model.gradient_checkpointing_enable()
    table = torch.randn(len(flat), ImageBindConfig.from_encoder(config.encoder).out_embed_dim)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pad = llm.tokenizer.pad_token_id
    batches = [examples[i : i + args.batch_size] for i in range(0, len(examples) - args.batch_size + 1,
                                                                 args.batch_size)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _step(model, optimizer, collate(batches[0], pad), table)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        for b in batches[1 : args.steps + 1]:
            _step(model, optimizer, collate(b, pad), table)
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {"samples_per_s": round(args.steps * args.batch_size / seconds, 2),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def bench_7b(args) -> dict:
    from modaverse.data.synth import synthesize

    tmp = Path(tempfile.mkdtemp())
    synthesize(tmp, num=args.batch_size * (args.steps + 2), seed=0, test_fraction=0.05)
    results = {}
    for setting in args.settings:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            results[setting] = _one_setting(args, setting, tmp / "train.jsonl")
        except torch.OutOfMemoryError:
            results[setting] = {"error": "out of memory"}
        torch.cuda.empty_cache()
    return {"profile": "vicuna-7b", "device": torch.cuda.get_device_name(), "batch_size": args.batch_size,
            "steps": args.steps, "settings": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=["tiny", "vicuna-7b"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--settings", nargs="+", default=["lora", "frozen", "full"], choices=["lora", "frozen", "full"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, help="JSON results file (default: benchmarks/results/train-PROFILE.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = bench_tiny(args) if args.profile == "tiny" else bench_7b(args)
    result["machine"] = platform.processor() or platform.machine()
    out = args.output or ROOT / "benchmarks" / "results" / f"train-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
