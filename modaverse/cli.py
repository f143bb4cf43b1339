"""The ``modaverse`` console script: one subcommand per plain function (litgpt style).

Heavy imports (torch, transformers) happen inside the commands, so ``--help`` is instant.
User errors (:class:`~modaverse.errors.ModaverseError`) print one line and exit 2; no
traceback is shown for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from modaverse.errors import ConfigError, ModaverseError


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and a pointer to --help), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_args(p: argparse.ArgumentParser, default: str = "tiny") -> None:
    p.add_argument("--config", "-c", default=None,
                   help=f"packaged config name (see `modaverse configs`) or YAML path; default: {default}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set encoder.device=cpu (repeatable)")


def _add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="D",
                   help="trained weights: a `modaverse train` run folder or one of its checkpoints; the "
                   "model is rebuilt as the checkpoint describes (default: the config's `checkpoint`)")


def _config(args: argparse.Namespace):
    """The config the command names, rebuilt around ``--checkpoint`` when one is given (its
    model-shaping settings come from the checkpoint; ``--set`` still wins)."""
    from modaverse.config import load_config

    if getattr(args, "checkpoint", None):
        from modaverse.checkpoint import config_for

        return config_for(args.checkpoint, args.config or "tiny", args.overrides)
    return load_config(args.config or "tiny", args.overrides)


def _read_encoder_json(path: str):
    from pydantic import ValidationError

    from modaverse.imagebind.config import ImageBindConfig

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


def _number(text: str, cast: type = float):
    try:
        return cast(text)
    except ValueError:
        what = "whole number" if cast is int else "number"
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _dedup_threshold(text: str) -> float:
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 would make every record a duplicate")
    return value


def _instruction_kind(text: str) -> str:
    from instructions import KINDS

    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {text!r}; known: {', '.join(KINDS)}")
    return text


def _shard(text: str) -> tuple[int, int]:
    from modaverse.instruct.settings import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device(text: str) -> str:
    from modaverse.config import check_device

    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_writable(out: Path) -> None:
    """Fails before any work when the output cannot be written (no file is touched)."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ModaverseError(f"{out}: cannot write there ({parent} is not a writable folder)")
    if out.is_dir():
        raise ModaverseError(f"{out}: is a directory; give a file name ending in .safetensors")


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed media files with ImageBind into OUT.safetensors."""
    from tqdm.auto import tqdm

    from modaverse.media.sniff import check_file

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
    _check_writable(out)
    for f in args.files:  # cheap checks first: fail before any model is built
        check_file(Path(f))

    from modaverse.encoder import DTYPES, Encoder, build_imagebind, pick_device
    from modaverse.imagebind.checkpoint import resolve_weights
    from modaverse.media import MediaConfig

    if args.encoder_config:
        ib_config = _read_encoder_json(args.encoder_config)
        model = build_imagebind(ib_config, resolve_weights(args.weights))
        encoder = Encoder(model, MediaConfig(), device=pick_device(args.device or "auto"),
                          dtype=DTYPES["float32"], batch_size=args.batch_size or 8)
        arch = "custom"
    else:
        config = _config(args)
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
    from modaverse import embfile

    try:
        embfile.write(out, emb, [str(f) for f in args.files], mods, arch)
    except Exception as e:  # safetensors wraps OS errors in its own type
        raise ModaverseError(f"{out}: cannot write ({e})") from None
    counts = ", ".join(f"{m}: {mods.count(m)}" for m in dict.fromkeys(mods))
    print(f"embedded {len(mods)} file(s) ({counts}) -> {out} [{emb.shape[0]} x {emb.shape[1]}]")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise an embeddings file written by `modaverse embed`."""
    from modaverse import embfile

    for path in args.files:
        if not Path(path).is_file():
            raise ModaverseError(f"{path}: no such file")
        try:
            print(embfile.describe(path))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ModaverseError(f"{path}: not an embeddings file ({e})") from None
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    """List packaged configs, or print one fully resolved."""
    from modaverse.config import config_summary, describe_keys, list_configs

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
        return 0
    import yaml

    print(yaml.safe_dump(_config(args).model_dump(mode="json"), sort_keys=False).rstrip())
    return 0


def cmd_archs(args: argparse.Namespace) -> int:
    """List ImageBind architectures (what `encoder.arch` accepts)."""
    from modaverse.imagebind.config import ImageBindConfig, list_archs

    for name in list_archs():
        c = ImageBindConfig.from_name(name)
        print(f"{name}\tvision {c.vision_embed_dim}x{c.vision_num_blocks}\tout {c.out_embed_dim}")
    return 0


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="sampling seed (default: generation.seed, else the config's seed)")
    p.add_argument("--max-new-tokens", type=_positive_int, help="cap on generated tokens (default: from config)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: from config)")
    p.add_argument("--unconstrained", action="store_true",
                   help="decode without the meta-response grammar; an unparsable answer becomes a plain text reply")


def _generation_kwargs(args: argparse.Namespace) -> dict:
    if args.temperature is not None and not 0 <= args.temperature <= 5:
        raise ModaverseError(f"--temperature {args.temperature}: must be between 0 and 5")
    kwargs = {"seed": args.seed, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.unconstrained:
        kwargs["constrained"] = False
    return kwargs


def _default_out_dir(kind: str) -> Path:
    import time

    return Path("outputs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_generate(args: argparse.Namespace) -> int:
    """One request: instruction + inputs -> D/response.json (meta-response and outputs)."""
    from modaverse.atomic import json_text, write_text_atomic
    from modaverse.media.sniff import check_file

    out_dir = Path(args.output_dir) if args.output_dir else _default_out_dir("generate")
    response = out_dir / "response.json"
    if response.exists() and not args.force:
        raise ModaverseError(f"{response}: already exists; pass --force to replace it or choose another --output-dir")
    _check_writable(response)
    for f in args.inputs:  # cheap checks first: fail before any model is built
        check_file(Path(f))
    gen_kwargs = _generation_kwargs(args)

    from modaverse.pipeline import ModaVerse

    config = _config(args)
    pipe = ModaVerse.from_config(config)
    items = [pipe.encoder.load(f, args.modality) for f in args.inputs]
    turn = pipe(args.instruction, items, **gen_kwargs, output_dir=None if args.no_render else out_dir)
    doc = {"config": config.name, **turn.to_dict()}
    text = json_text(doc)
    replaced = _listed_outputs(response)
    try:
        write_text_atomic(response, text)
    except OSError as e:
        raise ModaverseError(f"{response}: cannot write ({e.strerror})") from None
    for old in replaced - {Path(p).resolve() for p in doc["outputs"]}:  # --force: the replaced run's files
        if old.parent == out_dir.resolve():                           # go once the new answer is safe
            for f in (old, old.with_name(old.name + ".json")):
                f.unlink(missing_ok=True)
    if args.json:
        print(text, end="")
    else:
        from modaverse.display import summary

        print(summary(turn))
        print(f"wrote {response}")
    return 0


def _listed_outputs(response: Path) -> set[Path]:
    """The generated files an earlier response.json lists (none if it is absent or unreadable)."""
    try:
        return {Path(p).resolve() for p in json.loads(response.read_text()).get("outputs", [])}
    except (OSError, ValueError, AttributeError):
        return set()


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive multi-turn chat with attachments."""
    from modaverse.chat import ChatSession, repl
    from modaverse.pipeline import ModaVerse

    gen_kwargs = _generation_kwargs(args)
    out_dir = Path(args.output_dir) if args.output_dir else _default_out_dir("chat")
    print("loading models ...", file=sys.stderr, flush=True)
    pipe = ModaVerse.from_config(_config(args))
    return repl(ChatSession(pipe, out_dir, **gen_kwargs))


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
    config = _config(args)
    zoo = Zoo.from_config(config)
    inputs = []
    if args.input:
        from modaverse.media import load_media
        from modaverse.media.sniff import check_file

        check_file(Path(args.input))
        inputs = [load_media(args.input, None, config.media)]
    out_dir = Path(args.output_dir) if args.output_dir else _default_out_dir("render")
    files = zoo.render(args.capability, args.prompt, dict(args.params), out_dir, inputs)
    for f in files:
        print(f)
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    """List configured capabilities and known plug-ins."""
    from model_zoo.registry import plugins
    from model_zoo.zoo import Zoo

    zoo = Zoo.from_config(_config(args))
    print("| capability | plug-in | model | dtype | device | state |\n|---|---|---|---|---|---|")
    for row in zoo.status():
        state = "loaded" if row["loaded"] else "not loaded (loads on first use)"
        print(f"| {row['capability']} | {row['plugin']} | {row['model']} | {row['dtype']} | {row['device']} | {state} |")
    print("\nplug-ins: " + ", ".join(f"{name} ({where})" for name, where in sorted(plugins().items())))
    from modaverse.config import list_zoo_presets

    print("presets (--set zoo=NAME): " + ", ".join(list_zoo_presets()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """One-stage training of adaptors + LoRA; see docs/training.md."""
    from modaverse.training.recipe import train

    config = _config(args)
    if args.max_steps is not None:
        config.train.max_steps = args.max_steps
    if args.max_examples is not None:
        config.train.max_examples = args.max_examples
    if args.resume and args.overwrite:
        raise ModaverseError("--resume and --overwrite are alternatives; give one")
    logging.getLogger("modaverse").setLevel(logging.INFO)
    summary = train(config, output_dir=args.output_dir, resume=args.resume, overwrite=args.overwrite)
    if summary:
        print(json.dumps({k: summary[k] for k in ("output", "steps", "last", "seconds")}, ensure_ascii=False))
        if "eval" in summary:
            e = summary["eval"]
            print(f"held-out: capability accuracy {e['capability_accuracy']:.1%}, "
                  f"prompt exact match {e['prompt_exact_match']:.1%} ({e['items']} items)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """Training data: synth, validate, import, schema."""
    from tqdm.auto import tqdm

    if args.action == "schema":
        from modaverse.data.records import record_schema

        print(json.dumps(record_schema(), indent=2))
        return 0
    if args.action == "synth":
        from modaverse.data.synth import synthesize

        out = Path(args.output)
        if any((out / f).exists() for f in ("train.jsonl", "test.jsonl")) and not args.force:
            raise ModaverseError(f"{out}: already holds train.jsonl/test.jsonl; pass --force to replace them")
        per = max(1, args.per_input)
        with tqdm(total=-(-args.num // per), unit="input", desc="synth", disable=None, file=sys.stderr,
                  leave=False) as bar:
            train, test = synthesize(out, args.num, args.seed, args.test_fraction, per, on_progress=bar.update)
        count = [len(p.read_text().splitlines()) for p in (train, test)]
        print(f"wrote {count[0]} training and {count[1]} held-out conversations: {train}, {test}")
        if args.benchmark_sets:
            from modaverse.data.synth import write_benchmark_set

            for modality in ("image", "video", "audio"):
                folder = write_benchmark_set(out / "benchmarks" / modality, modality, args.benchmark_sets, args.seed + 1)
                print(f"wrote {args.benchmark_sets} {modality} item(s) in `modaverse eval run`'s layout: {folder}")
        return 0
    if args.action == "validate":
        from modaverse.data.validate import report

        if not Path(args.file).is_file():
            raise ModaverseError(f"{args.file}: no such file")
        lines, counts, good = report(args.file, _config(args), limit=args.limit, decode=not args.no_decode)
        for line in lines:
            print(line)
        bad = sum(counts.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        print(f"{args.file}: {good} record(s) ok, {bad} bad" + (f" ({detail})" if bad else ""))
        return 1 if bad else 0
    # import
    from modaverse.atomic import write_text_atomic
    from modaverse.data.importers import convert
    from modaverse.data.records import record_line

    out = Path(args.output)
    if out.exists() and not args.force:
        raise ModaverseError(f"{out}: already exists; pass --force to replace it")
    kept, skipped = [], 0
    for index, record, reason in convert(args.format, args.source, out, args.media_root):
        if record is None:
            skipped += 1
            if skipped <= args.limit:
                print(f"{args.source}[{index}]: skipped: {reason}", file=sys.stderr)
            continue
        kept.append(record_line(record))
    write_text_atomic(out, "".join(line + "\n" for line in kept))
    print(f"wrote {len(kept)} record(s) to {out}; skipped {skipped}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Benchmarks: `run` (a paper table), `list`, `captions`, `generation`, `invocations`."""
    if args.benchmark == "list":
        from modaverse.evaluation.benchmarks import BENCHMARKS

        for b in BENCHMARKS.values():
            paper = ", ".join(f"{c.header} {c.paper}" for c in b.columns)
            print(f"{b.name:15s} {b.title}: {paper}")
        return 0
    if args.benchmark == "captions":
        from modaverse.evaluation.captions import read_predictions, read_references, score

        result = score(read_predictions(args.predictions), read_references(args.references),
                       spice=not args.no_spice)
    elif args.benchmark == "generation":
        from modaverse.config import load_config
        from modaverse.evaluation.extractors import Extractors
        from modaverse.evaluation.generation import read_side, score

        # Scoring outside a run defaults to the published feature networks, never the tiny profile's random ones.
        config = load_config(args.config or "modaverse-7b", args.overrides)
        result = score(args.kind, read_side(args.generated, args.kind, "generated"),
                       read_side(args.reference, args.kind, "reference"), Extractors(config.eval),
                       seed=config.eval.seed)
    elif args.benchmark == "run":
        from modaverse.evaluation.runner import run_benchmark

        config = _config(args)
        out = Path(args.output or Path("runs") / "eval" / args.name)
        try:
            result = run_benchmark(args.name, args.data, config, out, limit=args.limit, spice=not args.no_spice)
        except KeyboardInterrupt:
            print(f"modaverse: interrupted; {out / 'predictions.jsonl'} keeps every finished item; "
                  "rerun the same command to continue", file=sys.stderr)
            return 130
        print((out / "results.md").read_text(), file=sys.stderr)
        print(f"wrote {out / 'results.md'} and {out / 'results.json'}", file=sys.stderr)
        result = {k: v for k, v in result.items() if k != "notes"}  # the table above lists them
    else:
        from modaverse.evaluate import evaluate_invocations

        if not Path(args.data).is_file():
            raise ModaverseError(f"{args.data}: no such file")
        result = evaluate_invocations(_config(args), args.data, limit=args.limit)
        every = result.pop("all_mistakes")
        if args.mistakes:
            from modaverse.atomic import write_text_atomic

            write_text_atomic(Path(args.mistakes), "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in every))
            print(f"wrote all {len(every)} mistake(s) to {args.mistakes}", file=sys.stderr)
        elif len(every) > len(result["first_mistakes"]):
            print(f"modaverse: note: {len(every)} mistakes, the first {len(result['first_mistakes'])} shown; "
                  "--mistakes PATH writes them all", file=sys.stderr)
    for note in result.get("notes", []):
        print(f"modaverse: note: {note}", file=sys.stderr)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Web demo and REST API on one server; loopback unless --host says otherwise, never a share link."""
    import ipaddress
    import tempfile

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local server
    import uvicorn

    from modaverse.serve.api import create_app
    from modaverse.serve.service import Limits

    config = _config(args)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"modaverse: warning: serving on {args.host}: anyone who can reach this machine can use it "
              "(there is no authentication)", file=sys.stderr)
    import socket

    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:  # before the models load: a 7B model should not load only to find the port taken
            probe.bind((args.host, args.port))
        except OSError as e:
            raise ModaverseError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}; "
                                 "choose another --port or --host") from None
    outputs = Path(args.outputs) if args.outputs else Path(tempfile.mkdtemp(prefix="modaverse-serve-"))
    limits = Limits(args.max_upload_mb, args.max_files, args.queue_size)
    app = create_app(config, outputs, limits, ui=not args.no_ui)
    print(f"modaverse: loading {config.name}, then serving http://{args.host}:{args.port} "
          f"(outputs in {outputs})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    """Convert the official ModaVerse-7b-v0 checkpoint into our checkpoint format."""
    from modaverse.official import import_checkpoint

    out = Path(args.output)
    if out.exists() and not args.force:
        raise ModaverseError(f"{out}: already exists; pass --force to replace it")
    report = import_checkpoint(args.source, out, _config(args))
    print(report)
    return 0


def cmd_generate_instructions(args: argparse.Namespace) -> int:
    """Instruction data from an OpenAI-compatible chat API (paper section 3.3); see docs/instructions.md."""
    from modaverse.instruct import engine

    if args.output is None and not args.dry_run:
        raise ModaverseError("--output is required (the JSONL file records are appended to), unless --dry-run")
    caps = None
    if args.config:
        from modaverse import meta

        caps = meta.capabilities(_config(args).zoo)
    settings = engine.Settings(
        captions=Path(args.captions), output=Path(args.output) if args.output else None, num=args.num,
        references=args.references, seeds=args.seeds, templates=args.templates, kinds=tuple(args.kinds),
        model=args.model, base_url=args.base_url, concurrency=args.concurrency, seed=args.seed,
        structured_outputs=args.structured_outputs, timeout=args.timeout, max_retries=args.max_retries,
        max_requests_per_minute=args.max_requests_per_minute, shard=args.shard, temperature=args.temperature,
        max_tokens=args.max_tokens, examples=args.examples, references_per_request=args.references_per_request,
        dedup_threshold=args.dedup_threshold, price=tuple(args.price) if args.price else None,
        check_media=not args.no_media_check, **({"capabilities": caps} if caps else {}))
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modaverse",
        description="Any-to-any multimodal assistant: ImageBind inputs, LLM meta-responses, text-to-x outputs.",
    )
    from modaverse import __version__

    parser.add_argument("--version", action="version", version=f"modaverse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("embed", help="embed media files with ImageBind",
                       description="Embed image/video/audio/depth/thermal/IMU files with ImageBind. "
                       "Writes the tensor `embeddings` [N, D] in input order; metadata lists each "
                       "file's modality. Embeddings are upstream's: L2-normalised, with each tower's "
                       "logit scale applied (x20 for audio).")
    p.add_argument("files", nargs="+", metavar="FILE", help="media files; modality from extension and content")
    _add_config_args(p)
    p.add_argument("--encoder-config", metavar="JSON",
                   help="JSON of upstream ImageBindModel kwargs, instead of --config (needs --weights)")
    p.add_argument("--weights", metavar="W", help="checkpoint (.pth or .safetensors) to load")
    p.add_argument("--modality", choices=["image", "video", "audio", "depth", "thermal", "imu"],
                   help="force the modality of every FILE (e.g. for .npy maps)")
    p.add_argument("--output", "-o", required=True, metavar="OUT.safetensors", help="where to write")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--device", type=_device, help="cpu, cuda, cuda:N or auto (default: from config)")
    p.add_argument("--batch-size", type=_positive_int, help="files per forward pass (default: from config)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("generate", help="answer one instruction (with any inputs) as a meta-response",
                       description="Run one request through the assistant: inputs are embedded, the LLM "
                       "answers with a meta-response (a reply and generator invocations), which is written "
                       "to OUTPUT_DIR/response.json. '<media>' in the instruction places inputs inline, in "
                       "order; without it inputs precede the instruction.")
    p.add_argument("instruction", metavar="INSTRUCTION")
    p.add_argument("--input", "-i", dest="inputs", action="append", default=[], metavar="FILE",
                   help="media file (image, video, audio, depth, thermal, IMU); repeatable, any mix")
    p.add_argument("--modality", choices=["image", "video", "audio", "depth", "thermal", "imu"],
                   help="force the modality of every input (e.g. for .npy maps)")
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where response.json goes (default: outputs/generate-TIME)")
    p.add_argument("--json", action="store_true", help="print the response JSON instead of a summary")
    p.add_argument("--force", action="store_true", help="replace an existing D/response.json")
    p.add_argument("--no-render", action="store_true", help="only the meta-response; do not run the generators")
    _add_checkpoint_arg(p)
    _add_generation_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat",
                       description="A multi-turn chat. Commands: /attach FILE [MODALITY], /reset, /save PATH, "
                       "/help, /quit. Each turn's response is saved as JSON in the output folder.")
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where turn responses go (default: outputs/chat-TIME)")
    _add_checkpoint_arg(p)
    _add_generation_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("render", help="render one prompt with a zoo generator",
                       description="Run one zoo capability directly: writes the output file(s) and a JSON "
                       "sidecar each (prompt, parameters, seed, model, time) into the output folder.")
    p.add_argument("capability", metavar="CAPABILITY", help="e.g. text-to-image; see `modaverse zoo list`")
    p.add_argument("prompt", metavar="PROMPT")
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where files go (default: outputs/render-TIME)")
    p.add_argument("--param", "-p", dest="params", action="append", default=[], type=_param, metavar="KEY=VALUE",
                   help="render parameter, e.g. -p steps=30 -p seed=7 (bounded; repeatable)")
    p.add_argument("--input", "-i", metavar="FILE", help="input image for editing capabilities")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("zoo", help="list the configured generators and known plug-ins",
                       description="`modaverse zoo list`: each capability's plug-in, model, dtype, device and "
                       "load state, and every plug-in found (built-in and installed entry points).")
    p.add_argument("action", choices=["list"])
    _add_config_args(p)
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("train", help="train adaptors + LoRA on instruction data",
                       description="One-stage training (adaptors + LoRA, or as `trainable:` says) on the "
                       "config's train.data. Checkpoints go to OUTPUT_DIR (step-N/ every train.save_every "
                       "steps, final/ at the end); --resume continues the latest one exactly. For several "
                       "processes or GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml "
                       "-m modaverse train ...")
    _add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="run folder (default: train.output_dir)")
    p.add_argument("--max-steps", type=_positive_int, metavar="N", help="optimizer steps in total (train.max_steps)")
    p.add_argument("--max-examples", type=_positive_int, metavar="N",
                   help="train on a seeded sample of N conversations (train.max_examples); --max-steps alone "
                   "already limits encoding to the conversations its steps use")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its latest checkpoint "
                   "(a run with no checkpoint yet starts over)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT_DIR")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="synthesise, validate or import training data",
                       description="synth: write the synthetic benchmark set (media + train/test JSONL). "
                       "validate FILE: report bad records with line numbers (exit 1 if any). "
                       "import FORMAT SRC: convert official / llava / pandagpt JSON to our JSONL. "
                       "schema: print the JSON Schema of one record.")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = dsub.add_parser("synth", help="write the synthetic benchmark set")
    q.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for media/, train.jsonl, test.jsonl")
    q.add_argument("--num", type=_positive_int, default=3000, metavar="N", help="conversations in all (default 3000)")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    q.add_argument("--test-fraction", type=_fraction, default=0.2, metavar="F", help="held-out share (default 0.2)")
    q.add_argument("--per-input", type=_positive_int, default=1, metavar="K",
                   help="conversations sharing each media file (default 1)")
    q.add_argument("--benchmark-sets", type=_positive_int, metavar="N",
                   help="also write N new items per modality under DIR/benchmarks/{image,video,audio}, "
                   "in the dataset layout of `modaverse eval run` (try the runners offline)")
    q.add_argument("--force", action="store_true", help="replace existing train.jsonl/test.jsonl")
    q.set_defaults(func=cmd_data)
    q = dsub.add_parser("validate", help="report bad records with line numbers")
    q.add_argument("file", metavar="FILE")
    _add_config_args(q)
    q.add_argument("--limit", type=_positive_int, default=50, help="problems printed at most (default 50)")
    q.add_argument("--no-decode", action="store_true",
                   help="check files by existence, extension and signature only, without decoding each one "
                   "with the loaders training uses (faster on huge sets)")
    q.set_defaults(func=cmd_data)
    q = dsub.add_parser("import", help="convert another project's instruction JSON")
    q.add_argument("format", choices=["official", "llava", "pandagpt"])
    q.add_argument("source", metavar="SRC")
    q.add_argument("--output", "-o", required=True, metavar="OUT.jsonl")
    q.add_argument("--media-root", metavar="DIR", help="folder media paths are relative to (default: SRC's folder)")
    q.add_argument("--force", action="store_true", help="replace an existing output")
    q.add_argument("--limit", type=_positive_int, default=20, help="skipped items reported at most (default 20)")
    q.set_defaults(func=cmd_data)
    q = dsub.add_parser("schema", help="print the JSON Schema of a record")
    q.set_defaults(func=cmd_data)

    from instructions import KINDS
    from modaverse.instruct.settings import defaults

    d = defaults()
    p = sub.add_parser("generate-instructions", help="make instruction data with an OpenAI-compatible chat API",
                       description="Ask a chat model (OpenAI, or any compatible server via --base-url) for "
                       "instruction/response pairs built from captions of your media files, seed examples and "
                       "language references (ModaVerse section 3.3), and append the valid, non-duplicate ones "
                       "to OUT.jsonl in the training format. Rejected replies go to OUT.rejects.jsonl with the "
                       "reason, token counts to OUT.usage.jsonl. Rerunning the same command continues where the "
                       "last run stopped. The key comes from OPENAI_API_KEY. See docs/instructions.md.",
                       epilog="example: modaverse generate-instructions --captions captions.jsonl --num 1000 "
                       "--output data/instructions.jsonl --concurrency 16")
    p.add_argument("--captions", required=True, metavar="FILE",
                   help='JSONL, one {"modality": "image|video|audio", "media": PATH, "caption": TEXT} per line; '
                   "PATH relative to the file")
    p.add_argument("--references", metavar="FILE",
                   help='JSONL, one {"capability": "text-to-image|...", "prompt": TEXT} per line: prompts in each '
                   "generator's style (default: the shipped instructions/references.jsonl)")
    p.add_argument("--num", "-n", type=_positive_int, required=True, metavar="N",
                   help="records the output should hold (with --shard: all shards together)")
    p.add_argument("--output", "-o", metavar="OUT.jsonl", help="records are appended here (required unless --dry-run)")
    p.add_argument("--kinds", nargs="+", type=_instruction_kind, default=list(d["kinds"]), metavar="KIND",
                   help=f"instruction kinds, drawn evenly: {', '.join(KINDS)} (default: all)")
    p.add_argument("--model", "-m", default=d["model"], metavar="NAME", help=f"chat model (default {d['model']})")
    p.add_argument("--base-url", metavar="URL",
                   help="OpenAI-compatible API, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)")
    p.add_argument("--concurrency", "-j", type=_positive_int, default=d["concurrency"], metavar="K",
                   help=f"requests in flight at once (default {d['concurrency']})")
    p.add_argument("--seed", type=int, default=d["seed"], metavar="S",
                   help=f"what each request asks for is a function of the seed and its number (default {d['seed']})")
    p.add_argument("--no-structured-outputs", dest="structured_outputs", action="store_false",
                   help="do not send a JSON-schema response_format (for servers without structured outputs); "
                   "replies are validated all the same")
    p.add_argument("--dry-run", action="store_true", help="print the first N requests; needs no key or server")
    p.add_argument("--shard", type=_shard, default=d["shard"], metavar="i/n",
                   help="do shard i of n (0-based); shards never overlap (default 0/1)")
    p.add_argument("--max-requests-per-minute", type=_positive_float, metavar="R",
                   help="space requests evenly to stay under R per minute (default: no limit)")
    p.add_argument("--timeout", type=_positive_float, default=d["timeout"], metavar="S",
                   help=f"seconds per attempt before it is retried (default {d['timeout']:g})")
    p.add_argument("--max-retries", type=int, default=d["max_retries"], metavar="N",
                   help=f"retries per request on 429, 5xx and timeouts, honouring Retry-After (default {d['max_retries']})")
    p.add_argument("--temperature", type=float, default=d["temperature"], metavar="T",
                   help=f"sampling temperature (default {d['temperature']:g})")
    p.add_argument("--max-tokens", type=_positive_int, default=d["max_tokens"], metavar="N",
                   help=f"reply length limit in tokens (default {d['max_tokens']})")
    p.add_argument("--seeds", metavar="FILE", help="seed examples JSONL (default: the shipped instructions/seeds.jsonl)")
    p.add_argument("--templates", metavar="DIR",
                   help="folder with system.txt and one <kind>.txt per kind (default: the shipped templates)")
    p.add_argument("--examples", type=_positive_int, default=d["examples"], metavar="K",
                   help=f"seed examples per request (default {d['examples']})")
    p.add_argument("--references-per-request", type=_positive_int, default=d["references_per_request"], metavar="K",
                   help=f"language references per output-side request (default {d['references_per_request']})")
    p.add_argument("--dedup-threshold", type=_dedup_threshold, default=d["dedup_threshold"], metavar="F",
                   help="word-3-gram Jaccard similarity from which a record about the same media counts as a "
                   f"near-duplicate (default {d['dedup_threshold']})")
    p.add_argument("--price", nargs=2, type=float, metavar=("IN", "OUT"),
                   help="USD per million prompt and completion tokens, for the cost figure "
                   "(default: OpenAI's list price for known models on OpenAI's API)")
    p.add_argument("--no-media-check", action="store_true",
                   help="do not check that each captioned media file exists (e.g. it lives on another machine)")
    p.add_argument("--config", "-c", default=None,
                   help="take the generators' capabilities from this config's zoo (default: the built-in three)")
    p.set_defaults(func=cmd_generate_instructions, overrides=[])

    p = sub.add_parser("eval", help="evaluate a model: the paper's benchmarks and their metrics",
                       description="run: reproduce one of the paper's tables over a local dataset copy. "
                       "captions / generation: score existing outputs. invocations: meta-response accuracy. "
                       "See docs/evaluation.md.")
    esub = p.add_subparsers(dest="benchmark", metavar="COMMAND", required=True, parser_class=_Parser)
    from modaverse.evaluation.benchmarks import BENCHMARKS

    q = esub.add_parser("run", help="run a paper benchmark and write its table",
                        description="Drives the assistant over DIR (DIR/annotations.jsonl: one "
                        '{"id", "file", "captions": [...]} per item, files relative to DIR), appending each '
                        "prediction to OUT/predictions.jsonl as it comes (a rerun resumes), then writes "
                        "OUT/results.json and OUT/results.md with the paper's figures beside ours.")
    q.add_argument("name", metavar="BENCHMARK", choices=list(BENCHMARKS), help=" | ".join(BENCHMARKS))
    q.add_argument("--data", required=True, metavar="DIR", help="the dataset folder (docs/evaluation.md)")
    q.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N items")
    q.add_argument("--output", "-o", metavar="OUT", help="run folder (default: runs/eval/BENCHMARK)")
    q.add_argument("--no-spice", action="store_true", help="skip SPICE (and so SPIDEr) even when available")
    _add_config_args(q)
    _add_checkpoint_arg(q)
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("list", help="the benchmarks and the paper's figures")
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("captions", help="coco-caption metrics of predicted captions",
                        description="Scores predictions against references with pycocoevalcap, the code "
                        "behind published captioning numbers. Files are JSONL or JSON: predictions one "
                        '{"id", "caption"} per item (COCO results files work as they are), references one '
                        '{"id", "captions": [...]} per item or a COCO annotation file.')
    q.add_argument("--predictions", "-p", required=True, metavar="P", help="one predicted caption per item")
    q.add_argument("--references", "-r", required=True, metavar="R", help="one or more references per item")
    q.add_argument("--no-spice", action="store_true", help="skip SPICE and SPIDEr (SPICE is slow)")
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("generation", help="FID/IS (images), FID/CLIPSIM (videos), FD/IS (audio)",
                        description="Scores generated media against reference media. Each side is a folder "
                        '(all its media files) or a JSONL manifest of {"file", "prompt"} rows; CLIPSIM needs '
                        "the prompts. Feature-extractor weights are named by the config's eval.* keys.")
    q.add_argument("--kind", required=True, choices=["image", "video", "audio"], help="what was generated")
    q.add_argument("--generated", "-g", required=True, metavar="G", help="generated media: folder or manifest")
    q.add_argument("--reference", "-r", required=True, metavar="R", help="reference media: folder or manifest")
    _add_config_args(q, default="modaverse-7b, whose eval.* keys name the published feature-network weights")
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("invocations", help="capability accuracy and prompt match of meta-responses",
                        description="For each record of --data, answer the conversation up to its last "
                        "assistant message and compare: capability accuracy, prompt exact match and BLEU (JSON).")
    q.add_argument("--data", required=True, metavar="FILE", help="JSONL in the training format")
    _add_config_args(q)
    _add_checkpoint_arg(q)
    q.add_argument("--limit", type=_positive_int, metavar="N", help="score only the first N records")
    q.add_argument("--mistakes", metavar="PATH", help="write every wrong answer (line, id, expected, got) as JSONL")
    q.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="web demo and REST API on one server",
                       description="Starts the Gradio chat (at /) and the REST API (POST /v1/generate, "
                       "GET /v1/outputs/{id}/{name}, GET /healthz, OpenAPI at /docs) on one server. Models load "
                       "once, before the server answers. It binds 127.0.0.1 unless --host says otherwise and "
                       "never opens a public share link.")
    _add_config_args(p)
    _add_checkpoint_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_positive_int, default=7860, help="port (default 7860)")
    p.add_argument("--queue-size", type=_positive_int, default=8, metavar="N",
                   help="requests that may wait for the model; more get 503 at once (default 8)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=50.0, metavar="MB",
                   help="largest file accepted (default 50)")
    p.add_argument("--max-files", type=_positive_int, default=8, metavar="N", help="files per request (default 8)")
    p.add_argument("--outputs", metavar="DIR", help="where generated files are kept (default: a new temporary folder)")
    p.add_argument("--no-ui", action="store_true", help="serve the REST API only")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default info)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("import-checkpoint", help="convert the official ModaVerse checkpoint",
                       description="Convert the official ModaVerse-7b-v0 pytorch_model.pt (adaptor, LoRA, "
                       "full embed_tokens/lm_head) into a checkpoint folder for --config (default "
                       "modaverse-7b): the shared projection is copied to every modality's "
                       "adaptor, LoRA keys are renamed (with or without the adapter name), and the six "
                       "added token rows are kept.")
    p.add_argument("source", metavar="SRC", help="pytorch_model.pt")
    p.add_argument("--output", "-o", required=True, metavar="D", help="checkpoint folder to write")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("inspect", help="summarise an embeddings file",
                       description="Print each embedded file's modality and norm, and their cosine similarities.")
    p.add_argument("files", nargs="+", metavar="OUT.safetensors")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("configs", help="list packaged configs, or print one resolved",
                       description="Without --config: list packaged configs. With --config/--set: "
                       "print the validated config with every default filled in.")
    _add_config_args(p)
    p.add_argument("--keys", action="store_true", help="print every config key with type, default and meaning")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("archs", help="list ImageBind architectures")
    p.set_defaults(func=cmd_archs)
    return parser


class _LogFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"modaverse: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a bare `modaverse` is a question: answer it with the commands
        build_parser().print_help()
        return 0
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormat())
    logging.getLogger("modaverse").addHandler(handler)
    # Under `accelerate launch`, every process runs this; only the first speaks (N copies of each
    # message and error helped nobody). The others still exit with the same status.
    quiet_rank = os.environ.get("RANK", "0") != "0"
    if quiet_rank:
        handler.setLevel(logging.ERROR + 10)
    try:
        return args.func(args)
    except ModaverseError as e:
        if not quiet_rank:
            print(f"modaverse: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modaverse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
