"""Render latency per plug-in, and peak memory with lazy loading (LRU of one) versus everything resident.

Each memory mode runs in its own process, so peak RSS is that mode's alone. Capabilities
are rendered in turn, so with an LRU of one every render also reloads its generator:
the worst case, shown beside the render time with everything resident. "Weights
resident" is the largest total of generator weights loaded at once; "peak RSS" is the
whole process (Python, torch, diffusers included).

    python benchmarks/zoo.py                          # tiny profile, CPU
    python benchmarks/zoo.py --config my-gpu.yaml --renders 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "imagebind"


def measure(config_name: str, mode: str, renders: int) -> dict:
    """Runs in a child process: renders every capability ``renders`` times in one memory mode."""
    import torch

    from modaverse.config import load_config
    from modaverse.media import load_media
    from model_zoo.zoo import Zoo

    torch.set_num_threads(1)
    config = load_config(config_name)
    n = len(config.zoo)
    config.render.max_resident = 1 if mode == "lazy" else n
    zoo = Zoo.from_config(config)
    load_s = {}
    if mode == "resident":  # the research code's way: everything loaded up front
        for cap in zoo.capabilities:
            t = time.perf_counter()
            zoo.acquire(cap)
            load_s[cap] = time.perf_counter() - t
    inputs = [load_media(FIX / "image_a.png")]
    latency: dict[str, list[float]] = {cap: [] for cap in zoo.capabilities}
    peak_weights = 0
    with tempfile.TemporaryDirectory() as out:
        for i in range(renders + 1):  # the first round loads (lazy mode) and warms up
            for cap in zoo.capabilities:
                t = time.perf_counter()
                zoo.render(cap, "a small red boat on a lake", {"seed": i}, Path(out), inputs)
                if i > 0:
                    latency[cap].append(time.perf_counter() - t)
                peak_weights = max(peak_weights, sum(zoo.generators[c].memory_bytes() for c in zoo.generators))
    return {
        "mode": mode,
        "max_resident": config.render.max_resident,
        "plugins": {cap: config.zoo[cap].plugin for cap in zoo.capabilities},
        "render_s_median": {cap: statistics.median(v) for cap, v in latency.items()},
        "startup_load_s": load_s,
        "peak_weights_mb": peak_weights / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tiny", help="config whose zoo: block is measured (default: tiny)")
    p.add_argument("--renders", type=int, default=5, help="timed renders per capability (after a warm-up)")
    p.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/zoo-CONFIG.json)")
    p.add_argument("--child", choices=["lazy", "resident"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.config, args.child, args.renders)))
        return
    runs = []
    for mode in ("lazy", "resident"):
        r = subprocess.run([sys.executable, __file__, "--config", args.config, "--renders", str(args.renders),
                            "--child", mode], capture_output=True, text=True, check=True)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    doc = {"config": args.config, "renders": args.renders, "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "runs": runs}
    name = Path(args.config).stem
    out = args.out or ROOT / "benchmarks" / "results" / f"zoo-{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lazy, resident = runs
    print("| capability | plug-in | render, resident | render incl. reload, LRU of one |\n|---|---|---|---|")
    for cap, secs in lazy["render_s_median"].items():
        print(f"| {cap} | {lazy['plugins'][cap]} | {resident['render_s_median'][cap] * 1000:.0f} ms "
              f"| {secs * 1000:.0f} ms |")
    print("\n| memory mode | weights resident (peak) | process peak RSS |\n|---|---|---|")
    for r in runs:
        label = "lazy, LRU of one" if r["mode"] == "lazy" else "everything resident"
        print(f"| {label} | {r['peak_weights_mb']:.1f} MB | {r['peak_rss_mb']:.0f} MB |")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
