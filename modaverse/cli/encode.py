"""``embed`` (files -> ImageBind embeddings), ``inspect`` (an embeddings file) and ``archs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modaverse.cli.common import add_config_args, check_writable, device, load, positive_int
from modaverse.core.errors import ConfigError, ModaverseError
from modaverse.core.modality import MODALITIES


def _read_encoder_json(path: str):
    from pydantic import ValidationError

    from modaverse.encoder.imagebind.config import ImageBindConfig

    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model_kwargs"), dict):
        raw = raw["model_kwargs"]  # fixture-style file: kwargs nested with provenance
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of ImageBindModel keyword arguments")
    try:
        return ImageBindConfig(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = "unknown ImageBindModel argument" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {msg}") from None


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed media files with ImageBind into OUT.safetensors."""
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise ModaverseError(f"{out}: the output must be a .safetensors file")
    if out.is_dir():
        raise ModaverseError(f"{out}: is a directory; give a .safetensors file path")
    if out.exists() and not args.force:
        raise ModaverseError(f"{out}: already exists; pass --force to replace it")
    if args.encoder_config and args.config:
        raise ModaverseError("--config and --encoder-config are alternatives; give one")
    if args.encoder_config and not args.weights:
        raise ModaverseError("--encoder-config needs --weights (the checkpoint those kwargs describe)")
    check_writable(out)
    from tqdm.auto import tqdm

    from modaverse.media.sniff import check_file  # torch comes with it: after the checks that need none

    for f in args.files:  # cheap checks first: fail before any model is built
        check_file(Path(f))

    from modaverse.core.device import DTYPES, pick_device
    from modaverse.encoder.embed import Encoder, build_imagebind
    from modaverse.encoder.imagebind.checkpoint import resolve_weights
    from modaverse.media import MediaConfig

    if args.encoder_config:
        ib_config = _read_encoder_json(args.encoder_config)
        model = build_imagebind(ib_config, resolve_weights(args.weights))
        encoder = Encoder(model, MediaConfig(), device=pick_device(args.device or "auto"),
                          dtype=DTYPES["float32"], batch_size=args.batch_size or 8)
        arch = "custom"
    else:
        config = load(args)
        # Typed CLI options are assigned (and validated) directly: a path is never parsed as YAML.
        if args.weights:
            config.encoder.weights = str(Path(args.weights).resolve())
        if args.device:
            config.encoder.device = args.device
        if args.batch_size is not None:
            config.encoder.batch_size = args.batch_size
        encoder = Encoder.from_config(config.encoder, config.media)
        arch = config.encoder.arch

    # disable=None: a bar on a terminal, nothing in logs and pipes (where it would only add noise).
    with tqdm(total=len(args.files), unit="file", desc="embed", disable=None if len(args.files) > 1 else True,
              file=sys.stderr, leave=False) as bar:
        emb, mods = encoder.embed(args.files, args.modality, on_progress=bar.update)
    from modaverse.encoder import embfile

    try:
        embfile.write(out, emb, [str(f) for f in args.files], mods, arch)
    except Exception as e:  # safetensors wraps OS errors in its own type
        raise ModaverseError(f"{out}: cannot write ({e})") from None
    counts = ", ".join(f"{m}: {mods.count(m)}" for m in dict.fromkeys(mods))
    print(f"embedded {len(mods)} file(s) ({counts}) -> {out} [{emb.shape[0]} x {emb.shape[1]}]")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise an embeddings file written by `modaverse embed`."""
    from modaverse.encoder import embfile

    for path in args.files:
        if not Path(path).is_file():
            raise ModaverseError(f"{path}: no such file")
        try:
            print(embfile.describe(path))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ModaverseError(f"{path}: not an embeddings file ({e})") from None
    return 0


def cmd_archs(args: argparse.Namespace) -> int:
    """List ImageBind architectures (what `encoder.arch` accepts)."""
    from modaverse.config import list_archs
    from modaverse.encoder.imagebind.config import ImageBindConfig

    for name in list_archs():
        c = ImageBindConfig.from_name(name)
        print(f"{name}\tvision {c.vision_embed_dim}x{c.vision_num_blocks}\tout {c.out_embed_dim}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="embed media files with ImageBind",
                       description="Embed image/video/audio/depth/thermal/IMU files with ImageBind. "
                       "Writes the tensor `embeddings` [N, D] in input order; metadata lists each "
                       "file's modality. Embeddings are upstream's: L2-normalised, with each tower's "
                       "logit scale applied (x20 for audio).")
    p.add_argument("files", nargs="+", metavar="FILE", help="media files; modality from extension and content")
    add_config_args(p)
    p.add_argument("--encoder-config", metavar="JSON",
                   help="JSON of upstream ImageBindModel kwargs, instead of --config (needs --weights)")
    p.add_argument("--weights", metavar="W", help="checkpoint (.pth or .safetensors) to load")
    p.add_argument("--modality", choices=MODALITIES,
                   help="force the modality of every FILE (e.g. for .npy maps)")
    p.add_argument("--output", "-o", required=True, metavar="OUT.safetensors", help="where to write")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--device", type=device, help="cpu, cuda, cuda:N or auto (default: from config)")
    p.add_argument("--batch-size", type=positive_int, help="files per forward pass (default: from config)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("inspect", help="summarise an embeddings file",
                       description="Print each embedded file's modality and norm, and their cosine similarities.")
    p.add_argument("files", nargs="+", metavar="OUT.safetensors")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("archs", help="list ImageBind architectures")
    p.set_defaults(func=cmd_archs)
