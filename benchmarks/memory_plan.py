"""The 7B plan on paper: each rank's GPU memory for DDP, FSDP and ZeRO-2, LoRA and full fine-tuning.

    python benchmarks/memory_plan.py                       # modaverse-7b at its configured batch, 1/4/8 GPUs
    python benchmarks/memory_plan.py --batch 4 --seq 2048  # another micro-batch or sequence length

Counts come from the real architectures built on the meta device (no weights, no memory):
Vicuna-7B v1.5 from its config.json (``configs/llm/vicuna-7b-v1.5.json``), LoRA applied by peft
with the profile's ``llm.lora``, the profile's adaptors, and ImageBind-huge from
``configs/imagebind/imagebind_huge.json``. The bytes per parameter are the recipe's:

- **LoRA**: the frozen LLM in ``llm.dtype`` (bfloat16, 2 bytes); trainables (LoRA, adaptors,
  marker rows) in float32 with float32 gradients and AdamW's two moments (16 bytes).
- **Full**: mixed precision as accelerate runs it, float32 weights and gradients and two moments
  (16 bytes a parameter); ZeRO-2 keeps bfloat16 weights on every rank and shards the float32
  master copy, the moments and the gradients.
- **DDP** replicates everything; **ZeRO-2** shards gradients and optimiser state over N;
  **FSDP** (full shard) shards weights too, and gathers one decoder layer at a time (two with
  prefetch) in bfloat16.
- **Activations** of one micro-batch, bfloat16, no recomputation (the recipe has none): per layer
  ``34 s b h`` bytes (Korthikanti et al., 2022, with fused attention: no ``s^2`` term), plus the
  float32 logits and their gradient, ``8 b s V``.
- A fixed 1 GiB for the CUDA context and the allocator's slack.

The encoder never trains: it encodes the training media into the feature cache before the LLM
is built, so its memory (ImageBind-huge in float16) is a separate, earlier phase.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VICUNA = ROOT / "configs" / "llm" / "vicuna-7b-v1.5.json"
GIB = 2**30
METHODS = {"DDP": "configs/accelerate/ddp.yaml", "ZeRO-2": "configs/accelerate/zero2.yaml",
           "FSDP": "configs/accelerate/fsdp.yaml"}  # preference order: the simplest that fits


def counts(profile: str) -> dict:
    """Parameter counts and shapes of the profile at its real size, built on the meta device."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from modaverse.adaptors import Adaptors
    from modaverse.config import load_config
    from modaverse.encoder.imagebind.config import ImageBindConfig
    from modaverse.encoder.imagebind.model import ImageBind

    config = load_config(profile)
    arch = {k: v for k, v in json.loads(VICUNA.read_text()).items() if not k.startswith("_")}
    llm_config = LlamaConfig(**arch)
    with torch.device("meta"):
        llm = LlamaForCausalLM(llm_config)
        total = sum(p.numel() for p in llm.parameters())
        layer = sum(p.numel() for p in llm.model.layers[0].parameters())
        lora = config.llm.lora
        peft = get_peft_model(llm, LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets)))
        lora_params = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        arch_config = ImageBindConfig.from_encoder(config.encoder)
        adaptors = Adaptors.from_config(config.adaptor, config.encoder.modalities, arch_config.out_embed_dim,
                                        llm_config.hidden_size)
        encoder = ImageBind(arch_config)
    markers = 6 * llm_config.hidden_size if config.trainable.markers else 0
    return {"profile": profile, "llm": total, "layer": layer, "layers": llm_config.num_hidden_layers,
            "hidden": llm_config.hidden_size, "vocab": llm_config.vocab_size, "lora": lora_params,
            "adaptors": sum(p.numel() for p in adaptors.parameters()), "markers": markers,
            "encoder": sum(p.numel() for p in encoder.parameters()),
            "batch": config.train.batch_size, "seq": config.train.max_length}


def per_rank(c: dict, method: str, tuning: str, n: int, batch: int, seq: int) -> dict[str, float]:
    """Bytes on each of ``n`` ranks, by kind."""
    p, t = c["llm"], c["lora"] + c["adaptors"] + c["markers"]
    shard = {"DDP": 1, "ZeRO-2": n, "FSDP": n}[method]
    if tuning == "lora":
        weights = 2 * p / (n if method == "FSDP" else 1) + 4 * t / (n if method == "FSDP" else 1)
        grads, optim = 4 * t / shard, 8 * t / shard
    elif method == "ZeRO-2":
        weights, grads, optim = 2 * p, 4 * p / n, 12 * p / n  # bf16 weights; fp32 master + moments sharded
    else:
        weights, grads, optim = 4 * p / shard, 4 * p / shard, 8 * p / shard
    gathered = 2 * 2 * c["layer"] if method == "FSDP" else 0
    acts = 34 * seq * batch * c["hidden"] * c["layers"] + 8 * batch * seq * c["vocab"]
    return {"weights": weights + gathered, "gradients": grads, "optimiser": optim, "activations": acts,
            "runtime": GIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="modaverse-7b")
    ap.add_argument("--batch", type=int, help="conversations per micro-batch per rank (default: train.batch_size)")
    ap.add_argument("--seq", type=int, help="tokens per conversation (default: train.max_length, else 1024)")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--memory", type=int, nargs="+", default=[24, 40, 80], help="GPU sizes in GB")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    c = counts(args.config)
    batch, seq = args.batch or c["batch"], args.seq or c["seq"] or 1024
    print(f"{args.config}: Vicuna-7B {c['llm'] / 1e9:.2f} B parameters ({c['layers']} layers), LoRA "
          f"{c['lora'] / 1e6:.1f} M + adaptors {c['adaptors'] / 1e6:.1f} M trainable; ImageBind-huge "
          f"{c['encoder'] / 1e9:.2f} B (encoding phase only: {2 * c['encoder'] / GIB:.1f} GiB in float16)")
    print(f"micro-batch {batch} x {seq} tokens per rank\n")
    print("| tuning | engine | GPUs | weights | gradients | optimiser | activations | total per GPU (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for tuning in ("lora", "full"):
        for method in METHODS:
            for n in args.gpus:
                if method != "DDP" and n == 1:
                    continue  # nothing to shard over
                parts = per_rank(c, method, tuning, n, batch, seq)
                total = sum(parts.values()) / GIB
                rows.append({"tuning": tuning, "method": method, "gpus": n, "gib": round(total, 1),
                             **{k: round(v / GIB, 2) for k, v in parts.items()}})
                print(f"| {tuning} | {method} | {n} | {parts['weights'] / GIB:.1f} | {parts['gradients'] / GIB:.1f} | "
                      f"{parts['optimiser'] / GIB:.1f} | {parts['activations'] / GIB:.1f} | **{total:.1f}** |")
    print(f"\nWhat to pick: the engine that fits the largest micro-batch (at most {batch}; the simplest on a tie) "
          f"with 10% to spare, raising train.grad_accum to keep the global batch (GB = 10^9 bytes):\n")
    print("| tuning | GPUs | " + " | ".join(f"{m} GB" for m in args.memory) + " |")
    print("|---|---|" + "---|" * len(args.memory))
    picks = []
    for tuning in ("lora", "full"):
        for n in args.gpus:
            cells = []
            for gb in args.memory:
                best = None
                for method in METHODS:
                    if method != "DDP" and n == 1:
                        continue
                    fits = [b for b in range(batch, 0, -1) if batch % b == 0
                            if sum(per_rank(c, method, tuning, n, b, seq).values()) <= 0.9 * gb * 1e9]
                    if fits and (best is None or fits[0] > best[1]):
                        best = (method, fits[0])
                picks.append({"tuning": tuning, "gpus": n, "gb": gb, "pick": best})
                cells.append(f"{best[0]}, micro-batch {best[1]}" + (f" x accum {batch // best[1]}" if best[1] < batch else "")
                             if best else "does not fit")
            print(f"| {tuning} | {n} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"counts": c, "batch": batch, "seq": seq, "rows": rows, "picks": picks}, indent=2) + "\n")


if __name__ == "__main__":
    main()
