"""What the encoder perceives: ``modaverse eval bind`` on the seed-7 evaluation set, beside random encoders.

    python benchmarks/bind.py                      # the tiny profile's bound encoder
    python benchmarks/bind.py --config tiny --set encoder.tower_weights=runs/tiny-bind

Writes the evaluation set (``modaverse data synth --seed 7``, the learning benchmark's) and the
training set the probes learn from (seed 0, ``data/synth``) when they are missing, then scores the
profile's encoder and, in the same table, the same architecture with random towers and the
encoder the earlier checkpoints were trained on (``imagebind_tiny``, random, 224 px). Writes
``benchmarks/results/bind-<config>.json`` and its ``.md`` table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED, EVAL_NUM = 7, 600
#: The encoders beside the profile's own, as config overrides.
COMPARE = {
    "random tiny112": ["encoder.tower_weights=null"],
    "random imagebind_tiny (earlier checkpoints)": [
        "encoder.arch=imagebind_tiny", "encoder.tower_weights=null", "media.image_size=224", "media.video.size=224",
        "media.video.crops=3"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="profile whose encoder is scored (default tiny)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval-dir", type=Path, default=ROOT / "data" / "eval")
    ap.add_argument("--train-dir", type=Path, default=ROOT / "data" / "synth")
    ap.add_argument("--no-compare", action="store_true", help="score the profile's encoder alone")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from modaverse.config import load_config
    from modaverse.data.synth import synthesize
    from modaverse.evaluation.binding import evaluate_binding, table

    if not (args.eval_dir / "media.jsonl").is_file():
        synthesize(args.eval_dir, EVAL_NUM, EVAL_SEED, test_fraction=0.5, shifted_fraction=0.5)
    if not (args.train_dir / "media.jsonl").is_file():
        synthesize(args.train_dir)
    data, probes = args.eval_dir / "media.jsonl", args.train_dir / "media.jsonl"
    encoders = {"bound": args.overrides, **({} if args.no_compare else
                                            {k: [*args.overrides, *v] for k, v in COMPARE.items()})}
    reports = {}
    for name, overrides in encoders.items():
        t = time.perf_counter()
        reports[name] = evaluate_binding(load_config(args.config, overrides), data, probes)
        reports[name]["seconds"] = round(time.perf_counter() - t, 1)
    text = table(reports)
    print(text)
    out = ROOT / "benchmarks" / "results" / f"bind-{args.config}.json"
    out.write_text(json.dumps(reports, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
