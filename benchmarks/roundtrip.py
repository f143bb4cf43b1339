"""Does the zoo render what it is asked? ``modaverse eval roundtrip`` on a profile, written for the docs.

    python benchmarks/roundtrip.py                         # the tiny profile's generators, 20 renders a caption
    python benchmarks/roundtrip.py --set zoo=tiny          # the random tiny generators, for comparison
    python benchmarks/roundtrip.py --capability text-to-video --loop 0 --name video   # one generator

For each capability: the judges' verdicts on renders of every caption of the synthetic vocabulary,
beside the same judges on real samples, and the median render time; then the whole loop
(describe -> draw -> describe) on 40 held-out pictures. Writes
``benchmarks/results/roundtrip-<config>[-<name>].json`` and its ``.md`` table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(report: dict) -> str:
    rows = ["| capability | judged | renders (pixel rules) | real samples (pixel rules) | renders (encoder) "
            "| real samples (encoder) |", "|---|---|---|---|---|---|"]

    def pct(r: dict, key: str, value: str) -> str:
        return f"{r[key][value]:.1%}" if value in r.get(key, {}) else "-"

    for capability, r in report.items():
        if capability == "loop":
            continue
        for key in dict.fromkeys([*r["renders_judged"], *r.get("renders_encoder_judged", {})]):
            rows.append(f"| {capability} | {key} | {pct(r, 'renders_judged', key)} | "
                        f"{pct(r, 'real_samples_judged', key)} | {pct(r, 'renders_encoder_judged', key)} | "
                        f"{pct(r, 'real_samples_encoder_judged', key)} |")
    timing = ["", "| capability | renders | median render (s) |", "|---|---|---|"]
    timing += [f"| {c} | {r['renders']} | {r['render_seconds_median']} |" for c, r in report.items() if c != "loop"]
    loop = report.get("loop")
    tail = [] if loop is None else ["", f"Whole loop on {loop['pictures']} held-out pictures: drawn {loop['drawn']:.1%}, "
                                        f"colour kept {loop['colour']:.1%}, shape kept {loop['shape']:.1%}."]
    return "\n".join(rows + timing + tail) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--capability", action="append", dest="capabilities", metavar="C",
                    help="judge only this capability (repeatable; default: every one the judges know)")
    ap.add_argument("--samples", type=int, default=20, help="renders per caption (default 20)")
    ap.add_argument("--loop", type=int, default=40, help="held-out pictures in the whole loop (default 40; 0: none)")
    ap.add_argument("--name", help="suffix of the result files")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from modaverse.config import load_config
    from modaverse.evaluation.roundtrip import loop, roundtrip

    config = load_config(args.config, args.overrides)
    t = time.perf_counter()
    report = roundtrip(config, args.capabilities, n=args.samples)
    if args.loop:
        report["loop"] = loop(config, args.loop)
    report["seconds"] = round(time.perf_counter() - t, 1)
    stem = f"roundtrip-{args.config}" + (f"-{args.name}" if args.name else "")
    out = ROOT / "benchmarks" / "results" / f"{stem}.json"
    out.write_text(json.dumps({"config": args.config, "overrides": args.overrides, **report}, indent=2) + "\n")
    text = table({k: v for k, v in report.items() if k != "seconds"})
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
