"""``train``: the training recipe, with invocation accuracy as its end-of-run evaluation."""

from __future__ import annotations

import argparse
import json
import logging

from modaverse.cli.common import add_config_args, add_run_args, load, positive_int, run_kwargs


def held_out_score(config, data: str, progress: bool | None, limit: int | None) -> dict:
    """The recipe's end-of-run evaluation: invocation accuracy on ``train.eval_data``."""
    from modaverse.evaluation.invocations import evaluate_invocations

    result = evaluate_invocations(config, data, progress=progress, limit=limit)
    result.pop("all_mistakes")  # summary.json keeps the first few; `modaverse eval invocations --mistakes` has all
    return result


def cmd_train(args: argparse.Namespace) -> int:
    """One-stage training of adaptors + LoRA; see docs/training.md."""
    from modaverse.training.recipe import train

    config = load(args)
    if args.max_steps is not None:
        config.train.max_steps = args.max_steps
    if args.max_examples is not None:
        config.train.max_examples = args.max_examples
    kwargs = run_kwargs(args)
    logging.getLogger("modaverse").setLevel(logging.INFO)
    summary = train(config, evaluate=held_out_score, **kwargs)
    if summary:
        print(json.dumps({k: summary[k] for k in ("output", "steps", "last", "seconds")}, ensure_ascii=False))
        if "eval" in summary:
            e = summary["eval"]
            print(f"held-out: capability accuracy {e['capability_accuracy']:.1%}, "
                  f"prompt exact match {e['prompt_exact_match']:.1%} ({e['items']} items)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train adaptors + LoRA on instruction data",
                       description="One-stage training (adaptors + LoRA, or as `trainable:` says) on the "
                       "config's train.data. Checkpoints go to OUTPUT_DIR (step-N/ every train.save_every "
                       "steps, final/ at the end); --resume continues the latest one exactly. For several "
                       "processes, GPUs or machines: accelerate launch --config_file "
                       "configs/accelerate/ddp.yaml (or fsdp.yaml) -m modaverse train ...; on CPUs with "
                       "ACCELERATE_USE_CPU=1. `modaverse configs` lists the launcher configs and what has run "
                       "them; docs/training.md has the multi-machine and SLURM lines.")
    add_config_args(p)
    add_run_args(p, "train.output_dir", "optimizer steps in total (train.max_steps)",
                 "continue the run in OUTPUT_DIR from its latest checkpoint (a run with no checkpoint yet starts "
                 "over)")
    p.add_argument("--max-examples", type=positive_int, metavar="N",
                   help="train on a seeded sample of N conversations (train.max_examples); --max-steps alone "
                   "already limits encoding to the conversations its steps use")
    p.set_defaults(func=cmd_train)
