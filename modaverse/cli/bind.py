"""``bind``: ImageBind's binding recipe (vision-text, then every other tower against frozen vision)."""

from __future__ import annotations

import argparse
import json
import logging

from modaverse.cli.common import add_config_args, add_run_args, load, run_kwargs

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")


def towers_arg(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TOWERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown tower(s) {', '.join(bad) or '(none)'}; choose from "
                                         f"{', '.join(TOWERS)}, comma-separated")
    return names


def cmd_bind(args: argparse.Namespace) -> int:
    """Trains the encoder's towers; each tower's weights land in OUTPUT_DIR/final/<tower>.safetensors."""
    from modaverse.training.bind import bind

    config = load(args)
    b = config.bind
    if args.pairs:
        b.pairs = args.pairs
    if args.towers:
        b.towers = args.towers
    if args.max_steps is not None:  # a short run: each stage at most N steps
        b.vision_text_steps = min(b.vision_text_steps, args.max_steps)
        b.bind_steps = min(b.bind_steps, args.max_steps)
    kwargs = run_kwargs(args)
    logging.getLogger("modaverse").setLevel(logging.INFO)
    summary = bind(config, **kwargs)
    if summary:
        print(json.dumps({k: summary[k] for k in ("output", "towers", "steps", "last", "seconds", "bytes")},
                         ensure_ascii=False))
        print(f"use them: --set encoder.tower_weights={summary['output']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bind", help="train or bind the encoder's towers (ImageBind's recipe)",
                       description="ImageBind's recipe on the config's encoder: vision and text trained together "
                       "on captioned images and videos (skipped over pretrained weights, which stay frozen), then "
                       "audio, depth, thermal and IMU each bound to the frozen embeddings of their paired image or "
                       "video. Pairs: a media.jsonl-style file (`modaverse data synth` writes one). Each tower "
                       "lands in OUTPUT_DIR/final/<tower>.safetensors; every command then uses them through "
                       "encoder.tower_weights. Example, one new tower over the official weights: modaverse bind "
                       "--config modaverse-7b --towers thermal --pairs pairs.jsonl")
    add_config_args(p)
    p.add_argument("--pairs", metavar="FILE", help="pairs file (bind.pairs)")
    p.add_argument("--towers", type=towers_arg, metavar="T,T", help=f"towers to train, from {', '.join(TOWERS)} "
                   "(bind.towers; default all)")
    add_run_args(p, "bind.output_dir", "at most N steps per stage (a short run)")
    p.set_defaults(func=cmd_bind)
