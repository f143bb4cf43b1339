"""Does a trained text-to-audio folder's vocoder turn real log-mels back into the world's sounds?

    python benchmarks/vocoder.py runs/zoo-train/text-to-audio/final

The vocoder alone, before any UNet: log-mels of 40 held-out sounds (seed 7), computed exactly as
`zoo train text-to-audio` computes its training targets, are vocoded, and the round trip's pixel-
free sound judge names each waveform (low, high, noise or chirp). Beside it, per kind: the RMS
and spectral flatness of the real sound and of the vocoded one. A vocoder stuck at silence for
tones shows as a tenth of the RMS and a flatness near noise's. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a diffusers AudioLDM folder (zoo train's final/)")
    ap.add_argument("--sounds", type=int, default=40)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import SpeechT5HifiGan

    from modaverse.data import samples
    from modaverse.evaluation import judges
    from modaverse.training.audio_generator import AudioGeneratorRecipe

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    vocoder = SpeechT5HifiGan.from_pretrained(f"{args.folder}/vocoder").float().eval()
    recipe = AudioGeneratorRecipe.__new__(AudioGeneratorRecipe)  # only its log-mel, no run
    rows: dict[str, list[dict]] = defaultdict(list)
    for i in range(args.sounds):
        s = samples.audio(7, i, 1.28)
        with torch.no_grad():
            out = vocoder(recipe.log_mel(torch.from_numpy(s.array)[None].float()))[0].numpy()
        rows[s.content["sound"]].append({
            "named": judges.sound(out), "rms": float(np.sqrt(np.mean(out**2))),
            "real_rms": float(np.sqrt(np.mean(s.array**2))), "flatness": judges.flatness(judges.loud_power(out)),
            "real_flatness": judges.flatness(judges.loud_power(s.array))})
    kinds = {k: {"sounds": len(v), "named_right": sum(r["named"] == k for r in v),
                 **{f: round(float(np.median([r[f] for r in v])), 4)
                    for f in ("rms", "real_rms", "flatness", "real_flatness")}} for k, v in sorted(rows.items())}
    right = sum(k["named_right"] for k in kinds.values())
    print(json.dumps({"folder": args.folder, "named_right": right, "sounds": args.sounds, "per_kind": kinds},
                     indent=2))


if __name__ == "__main__":
    main()
