"""``generate-instructions``: instruction data from an OpenAI-compatible chat API (paper section 3.3).

Its flags are read off :class:`~modaverse.instruct.settings.Settings` (each field names its flag),
and the parsed flags become the settings by field name: a new setting is one new field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import MISSING

from modaverse.cli.common import arg_type
from modaverse.core.errors import ModaverseError


def cmd_generate_instructions(args: argparse.Namespace) -> int:
    """Instruction data from an OpenAI-compatible chat API (paper section 3.3); see docs/instructions.md."""
    from modaverse.instruct import engine
    from modaverse.instruct.settings import flags

    if args.output is None and not args.dry_run:
        raise ModaverseError("--output is required (the JSONL file records are appended to), unless --dry-run")
    caps = {}
    if args.config:
        from modaverse.cli.common import load
        from modaverse.meta import schema as meta

        caps = {"capabilities": meta.capabilities(load(args).zoo)}
    settings = engine.Settings(**{name: getattr(args, name) for name, _, _ in flags()}, **caps)
    if args.dry_run:
        engine.dry_run(settings, sys.stdout)
        return 0
    if settings.output.is_dir():
        raise ModaverseError(f"{settings.output}: is a folder; give a file name such as instructions.jsonl")
    logging.getLogger("modaverse").setLevel(logging.INFO)
    try:
        counts = engine.generate(settings)
    except KeyboardInterrupt:
        held = sum(1 for line in settings.output.open(encoding="utf-8") if line.strip()) \
            if settings.output.is_file() else 0
        print(f"modaverse: interrupted; {settings.output} holds {held} record(s), all complete; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    print(json.dumps(engine.summary(counts, settings), ensure_ascii=False))
    return 0


def register(sub) -> None:
    from modaverse.instruct.settings import flags

    p = sub.add_parser("generate-instructions", help="make instruction data with an OpenAI-compatible chat API",
                       description="Ask a chat model (OpenAI, or any compatible server via --base-url) for "
                       "instruction/response pairs built from captions of your media files, seed examples and "
                       "language references (ModaVerse section 3.3), and append the valid, non-duplicate ones "
                       "to OUT.jsonl in the training format. Rejected replies go to OUT.rejects.jsonl with the "
                       "reason, token counts to OUT.usage.jsonl. Rerunning the same command continues where the "
                       "last run stopped. The key comes from OPENAI_API_KEY. See docs/instructions.md.",
                       epilog="example: modaverse generate-instructions --captions captions.jsonl --num 1000 "
                       "--output data/instructions.jsonl --concurrency 16")
    for name, flag, default in flags():
        options = {k: v for k, v in flag.items() if k not in ("names", "read")}
        if flag.get("read") is not None:
            options["type"] = arg_type(flag["read"])
        if default is MISSING:
            default = None
        if flag.get("action") is None and not flag.get("required"):
            options["default"] = list(default) if isinstance(default, tuple) and flag.get("nargs") == "+" else default
            if default is not None and "(default" not in flag["help"] and not isinstance(default, tuple):
                options["help"] = f"{flag['help']} (default {default:g})" if isinstance(default, float) \
                    else f"{flag['help']} (default {default})"
        p.add_argument(*flag["names"], dest=name, **options)
    p.add_argument("--dry-run", action="store_true", help="print the first N requests; needs no key or server")
    p.add_argument("--config", "-c", default=None,
                   help="take the generators' capabilities from this config's zoo (default: the built-in three)")
    p.set_defaults(func=cmd_generate_instructions, overrides=[])
