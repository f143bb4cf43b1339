"""Embedding throughput (files/s) per modality, tiny profile and real-size ImageBind-huge.

Random weights run exactly as fast as trained ones, so the real-size figures need no
checkpoint. Files are the test fixtures (real media: a 320x240 PNG, a 6 s stereo 44.1 kHz
WAV, a 4 s 160x120 H.264 MP4, and depth/thermal/IMU arrays), each repeated --files times,
so decoding and preprocessing are part of the measurement.

    python benchmarks/embed.py                       # tiny + huge on CPU
    python benchmarks/embed.py --arch imagebind_huge --device cuda --dtype float16 --files 64
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from modaverse.core.device import DTYPES, pick_device
from modaverse.encoder.embed import Encoder, build_imagebind
from modaverse.encoder.imagebind.config import ImageBindConfig
from modaverse.media import load_media

FIX = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "imagebind"
SAMPLES = {
    "image": (FIX / "image_a.png", None),
    "audio": (FIX / "audio_44k.wav", None),
    "video": (FIX / "video.mp4", None),
    "depth": (FIX / "depth.npy", "depth"),
    "thermal": (FIX / "thermal.npy", "thermal"),
    "imu": (FIX / "imu.npy", None),
}


def bench(encoder: Encoder, modality: str, n: int) -> dict:
    path, forced = SAMPLES[modality]
    load_media(path, forced, encoder.media)  # warm-up: lazy imports, cached filter tables
    t0 = time.perf_counter()
    items = [load_media(path, forced, encoder.media) for _ in range(n)]
    t_load = time.perf_counter() - t0
    encoder.encode(items[: min(2, n)])  # warm-up (kernels, allocator)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    encoder.encode(items)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    t_enc = time.perf_counter() - t0
    return {"modality": modality, "files": n, "load_files_per_s": n / t_load,
            "encode_files_per_s": n / t_enc, "end_to_end_files_per_s": n / (t_load + t_enc)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", help="imagebind_tiny and/or imagebind_huge (default: both)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--files", type=int, default=None, help="files per modality (default: 16 tiny, 4 huge)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--modalities", default="image,audio,video,depth,thermal,imu")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = []
    for arch in args.arch or ["imagebind_tiny", "imagebind_huge"]:
        t0 = time.perf_counter()
        model = build_imagebind(ImageBindConfig.from_name(arch))
        encoder = Encoder(model, device=device, dtype=DTYPES[args.dtype], batch_size=args.batch_size)
        build_s = time.perf_counter() - t0
        n = args.files or (16 if arch.endswith("tiny") else 4)
        for m in args.modalities.split(","):
            row = {"arch": arch, "device": str(device), "dtype": args.dtype, "build_s": build_s, **bench(encoder, m, n)}
            rows.append(row)
            print(f"{arch:15} {m:8} load {row['load_files_per_s']:8.1f}/s  encode {row['encode_files_per_s']:8.2f}/s"
                  f"  end-to-end {row['end_to_end_files_per_s']:8.2f}/s", file=sys.stderr, flush=True)
        del encoder, model
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}\n")
    print("| arch | device | modality | files | load files/s | encode files/s | end-to-end files/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['device']} {r['dtype']} | {r['modality']} | {r['files']} | "
              f"{r['load_files_per_s']:.1f} | {r['encode_files_per_s']:.2f} | {r['end_to_end_files_per_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
