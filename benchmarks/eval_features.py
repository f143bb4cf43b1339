"""Throughput of the evaluation feature extractors at their published sizes (random weights run
exactly as fast as trained ones), and the cost of the metrics themselves.

- FID Inception-v3 on 512x512 images (resized to 299 inside, as the TF graph does);
- PANNs Cnn14 (width 64) on 10 s clips at 16 kHz;
- Fréchet distance over 2048-d features (torchmetrics, float64) for 5,000 items a side.

    python benchmarks/eval_features.py                  # CPU, 1 thread
    python benchmarks/eval_features.py --device cuda --batch 64 --threads 16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, x: torch.Tensor, repeats: int) -> float:
    """Items per second of ``fn(x)`` after one warm-up call."""
    with torch.inference_mode():
        fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return repeats * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval-features-cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from modaverse.evaluation.paper.generation import frechet_distance
    from modaverse.evaluation.paper.inception import FIDInception
    from modaverse.evaluation.paper.panns import Cnn14

    dev = torch.device(args.device)
    inception = FIDInception().eval().to(dev)
    images = torch.randint(0, 256, (args.batch, 3, 512, 512), dtype=torch.uint8, device=dev)
    cnn14 = Cnn14().eval().to(dev)
    clips = torch.randn(args.batch, 160000, device=dev) * 0.1
    feats = torch.randn(5000, 2048, dtype=torch.float64)
    t = time.perf_counter()
    frechet_distance(feats, feats + 0.01)
    fd_s = time.perf_counter() - t
    result = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": args.threads, "batch": args.batch,
        "inception_images_per_s": round(rate(inception, images, args.repeats), 2),
        "cnn14_clips_per_s (10 s)": round(rate(cnn14, clips, args.repeats), 2),
        "frechet_distance_2048d_5000_s": round(fd_s, 2),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
