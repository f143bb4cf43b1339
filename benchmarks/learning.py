"""What a trained profile learned: the synthetic benchmark's held-out splits, broken down.

    python benchmarks/learning.py --config tiny                 # the shipped tiny checkpoint
    python benchmarks/learning.py --config smol
    python benchmarks/learning.py --config tiny-train --checkpoint runs/tiny-train

Scores a fresh evaluation set (``modaverse data synth --seed 7``: a seed training never uses;
half in distribution, half shifted) with ``modaverse eval invocations``, then joins each
record's outcome with its input file's parameters (``media.jsonl``) to say where the misses
are: per form of record, per modality of the input (pictures of two objects apart), and on
the shifted split per parameter that was moved outside the training ranges. Writes
``benchmarks/results/learning-<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED, EVAL_NUM = 7, 600


def share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="profile to score (default tiny)")
    ap.add_argument("--checkpoint", help="a run folder or checkpoint instead of the profile's own")
    ap.add_argument("--eval-dir", type=Path, default=ROOT / "data" / "eval",
                    help=f"the evaluation set, written here first if missing (seed {EVAL_SEED}, {EVAL_NUM} conversations)")
    ap.add_argument("--num", type=int, default=EVAL_NUM, help=f"conversations in a new set (default {EVAL_NUM})")
    ap.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/learning-<config>.json)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from modaverse.config import load_config
    from modaverse.data.records import read_records
    from modaverse.data.synth import synthesize
    from modaverse.evaluation.invocations import evaluate_invocations, form
    from modaverse.pipeline.assistant import ModaVerse

    if not (args.eval_dir / "shifted.jsonl").is_file():
        synthesize(args.eval_dir, args.num, EVAL_SEED, test_fraction=0.5, shifted_fraction=0.5)
    overrides = [f"train.feature_cache={args.eval_dir / 'cache'}"]
    if args.checkpoint:  # built as it was trained: its encoder, adaptor and LLM settings come from it
        from modaverse.checkpoint import config_for

        config = config_for(args.checkpoint, args.config, overrides)
    else:
        config = load_config(args.config, overrides)
    pipe = ModaVerse.from_config(config)
    manifest = {m["media"]: m for m in map(json.loads, (args.eval_dir / "media.jsonl").read_text().splitlines())}
    report: dict = {"config": args.config, "checkpoint": args.checkpoint, "eval_set": str(args.eval_dir),
                    "eval_seed": EVAL_SEED}
    for split in ("test", "shifted"):
        data = args.eval_dir / f"{split}.jsonl"
        t = time.perf_counter()
        result = evaluate_invocations(config, data, pipe=pipe, progress=sys.stderr.isatty())
        wrong = {m["line"] for m in result.pop("all_mistakes")}
        by_modality, by_axis = defaultdict(list), defaultdict(list)
        for line, record in enumerate(read_records(data), start=1):
            if form(record) == "text-only":
                continue
            first = next(m for m in record.messages if m.role == "user" and m.media).media[0]
            entry = manifest[first.path]
            kind = f"{entry['modality']} (2 objects)" if entry.get("others") else entry["modality"]
            by_modality[kind].append(line not in wrong)
            for axis in entry["params"].get("shifted", ()):
                by_axis[f"{entry['modality']}: {axis}"].append(line not in wrong)
        report[split] = {
            "seconds": round(time.perf_counter() - t, 1),
            "per_form": result["per_form"],
            "media_bearing_exact_by_modality": {k: {"items": len(v), "prompt_exact_match": share(v)}
                                                for k, v in sorted(by_modality.items())},
            **({"media_bearing_exact_by_shifted_axis": {k: {"items": len(v), "prompt_exact_match": share(v)}
                                                        for k, v in sorted(by_axis.items())}} if by_axis else {}),
        }
    print(json.dumps(report, indent=2))
    name = Path(args.checkpoint).name if args.checkpoint else args.config
    out = args.out or ROOT / "benchmarks" / "results" / f"learning-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
