"""``configs`` (list, print, every key) and ``import-checkpoint`` (the official ModaVerse weights)."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from modaverse.cli.common import add_config_args, load
from modaverse.core.errors import ModaverseError


def cmd_configs(args: argparse.Namespace) -> int:
    """List packaged configs, or print one fully resolved."""
    from modaverse.config import config_summary, launch_configs, list_configs

    if args.keys:
        print("| key | type | default | meaning |\n|---|---|---|---|")
        for key, typ, default, desc in describe_keys():
            print(f"| `{key}` | {typ} | `{default}` | {desc} |")
        return 0
    if args.config is None and not args.overrides:
        names = list_configs()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {config_summary(name)}")
        print("\naccelerate launch --config_file (docs/training.md):")
        for path, status in launch_configs():
            print(f"  {path}  {status}")
        return 0
    import yaml

    print(yaml.safe_dump(load(args).model_dump(mode="json"), sort_keys=False).rstrip())
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    """Convert the official ModaVerse-7b-v0 checkpoint into our checkpoint format."""
    from modaverse.pipeline.official import import_checkpoint

    out = Path(args.output)
    if out.exists() and not args.force:
        raise ModaverseError(f"{out}: already exists; pass --force to replace it")
    report = import_checkpoint(args.source, out, load(args))
    print(report)
    return 0


def register(sub) -> None:
    p = sub.add_parser("configs", help="list packaged configs, or print one resolved",
                       description="Without --config: list packaged configs. With --config/--set: "
                       "print the validated config with every default filled in.")
    add_config_args(p)
    p.add_argument("--keys", action="store_true", help="print every config key with type, default and meaning")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("import-checkpoint", help="convert the official ModaVerse checkpoint",
                       description="Convert the official ModaVerse-7b-v0 pytorch_model.pt (adaptor, LoRA, "
                       "full embed_tokens/lm_head) into a checkpoint folder for --config (default "
                       "modaverse-7b): the shared projection is copied to every modality's "
                       "adaptor, LoRA keys are renamed (with or without the adapter name), and the six "
                       "added token rows are kept.")
    p.add_argument("source", metavar="SRC", help="pytorch_model.pt")
    p.add_argument("--output", "-o", required=True, metavar="D", help="checkpoint folder to write")
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_import_checkpoint)


def describe_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key, generated from the schema."""
    from modaverse.config import Config, GeneratorConfig

    model = model or Config
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += describe_keys(ann, f"{key}.")
            continue
        if str(ann).startswith("dict[str, modaverse.config.GeneratorConfig]"):
            rows += describe_keys(GeneratorConfig, f"{key}.<capability>.")
            continue
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, _type_name(ann), default, field.description or ""))
    return rows


def _type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return " / ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann))
