"""``render`` (one prompt through one generator), ``zoo list`` and ``zoo train`` (the tiny generators)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modaverse.cli.common import add_config_args, add_run_args, default_out_dir, load, run_kwargs
from modaverse.core.errors import ModaverseError


def _param(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. steps=30")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def cmd_render(args: argparse.Namespace) -> int:
    """Render one prompt with one zoo capability (no LLM involved)."""
    from model_zoo.zoo import Zoo

    if not args.prompt.strip():
        raise ModaverseError("the prompt is empty")
    config = load(args)
    zoo = Zoo.from_config(config)
    inputs = []
    if args.input:
        from modaverse.media import load_media
        from modaverse.media.sniff import check_file

        check_file(Path(args.input))
        inputs = [load_media(args.input, None, config.media)]
    out_dir = Path(args.output_dir) if args.output_dir else default_out_dir("render")
    files = zoo.render(args.capability, args.prompt, dict(args.params), out_dir, inputs)
    for f in files:
        print(f)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    """List configured capabilities and known plug-ins."""
    from model_zoo.registry import plugins
    from model_zoo.zoo import Zoo

    zoo = Zoo.from_config(load(args))
    print("| capability | plug-in | model | dtype | device | state |\n|---|---|---|---|---|---|")
    for row in zoo.status():
        state = "loaded" if row["loaded"] else "not loaded (loads on first use)"
        print(f"| {row['capability']} | {row['plugin']} | {row['model']} | {row['dtype']} | {row['device']} | {state} |")
    print("\nplug-ins: " + ", ".join(f"{name} ({where})" for name, where in sorted(plugins().items())))
    from modaverse.config import list_zoo_presets

    print("presets (--set zoo=NAME): " + ", ".join(list_zoo_presets()))
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    """Trains tiny generators; each one's diffusers folder lands in its run folder's final/."""
    import json
    import logging

    from modaverse.training.generators import train_generator, training_order

    kwargs = run_kwargs(args)
    wanted = training_order(args.capability)
    if len(wanted) > 1 and args.output_dir:
        raise ModaverseError("--output-dir names one run folder; with several capabilities each goes to "
                             "zoo_train.output_dir/CAPABILITY")
    config = load(args)
    if args.max_steps is not None:  # a short run: each stage at most N steps
        for capability in wanted:
            steps = config.zoo_train.steps.get(capability, {})
            config.zoo_train.steps[capability] = {k: min(v, args.max_steps) for k, v in steps.items()}
    logging.getLogger("modaverse").setLevel(logging.INFO)
    for capability in wanted:
        summary = train_generator(config, capability, **kwargs)
        print(json.dumps({"capability": capability, **{k: summary[k] for k in ("output", "steps", "last", "seconds",
                                                                                "bytes")}}, ensure_ascii=False))
    return 0


def register(sub) -> None:
    p = sub.add_parser("render", help="render one prompt with a zoo generator",
                       description="Run one zoo capability directly: writes the output file(s) and a JSON "
                       "sidecar each (prompt, parameters, seed, model, time) into the output folder.")
    p.add_argument("capability", metavar="CAPABILITY", help="e.g. text-to-image; see `modaverse zoo list`")
    p.add_argument("prompt", metavar="PROMPT")
    add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where files go (default: outputs/render-TIME)")
    p.add_argument("--param", "-p", dest="params", action="append", default=[], type=_param, metavar="KEY=VALUE",
                   help="render parameter, e.g. -p steps=30 -p seed=7 (bounded; repeatable)")
    p.add_argument("--input", "-i", metavar="FILE", help="input image for editing capabilities")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("zoo", help="list the configured generators, or train the tiny ones",
                       description="`modaverse zoo list`: each capability's plug-in, model, dtype, device and "
                       "load state, and every plug-in found (built-in and installed entry points). "
                       "`modaverse zoo train CAPABILITY`: train the tiny generator of a capability on the "
                       "synthetic world (docs/zoo.md).")
    actions = p.add_subparsers(dest="action", required=True, metavar="{list,train}")
    q = actions.add_parser("list", help="configured generators and known plug-ins")
    add_config_args(q)
    q.set_defaults(func=cmd_zoo)
    q = actions.add_parser("train", help="train tiny generators on the synthetic world",
                           description="Trains each capability's tiny diffusers pipeline on captioned samples of the "
                           "synthetic world, in diffusers' conventions (VAE first, then the UNet: noise-prediction "
                           "MSE, captions dropped for classifier-free guidance, EMA weights). Settings: the "
                           "config's zoo_train section (`modaverse configs --keys`). The result, "
                           "OUTPUT_DIR/final, is a diffusers folder: use it with --set "
                           "zoo.text-to-image.plugin=stable-diffusion --set zoo.text-to-image.model=OUTPUT_DIR/final.")
    q.add_argument("capability", metavar="CAPABILITY", nargs="+", help="e.g. text-to-image; several train in "
                   "turn, text-to-image first (video and editing start from it)")
    add_config_args(q)
    add_run_args(q, "zoo_train.output_dir/CAPABILITY", "at most N steps per stage (a short run)")
    q.set_defaults(func=cmd_zoo_train)
