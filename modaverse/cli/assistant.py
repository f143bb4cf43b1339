"""``generate`` (one request) and ``chat`` (many turns): the assistant from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modaverse.cli.common import (
    add_checkpoint_arg,
    add_config_args,
    check_writable,
    default_out_dir,
    load,
    positive_int,
)
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import MODALITIES


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="sampling seed (default: generation.seed, else the config's seed)")
    p.add_argument("--max-new-tokens", type=positive_int, help="cap on generated tokens (default: from config)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default: from config)")
    p.add_argument("--unconstrained", action="store_true",
                   help="decode without the meta-response grammar; an unparsable answer becomes a plain text reply")


def _generation_kwargs(args: argparse.Namespace) -> dict:
    """The decoding flags, checked by the pipeline's own rules before any model is built."""
    from modaverse.pipeline.assistant import check_inputs

    kwargs = {"seed": args.seed, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.unconstrained:
        kwargs["constrained"] = False
    check_inputs(getattr(args, "instruction", "-"), getattr(args, "inputs", ()), max_new_tokens=args.max_new_tokens,
                 temperature=args.temperature, seed=args.seed)
    return kwargs


def cmd_generate(args: argparse.Namespace) -> int:
    """One request: instruction + inputs -> D/response.json (meta-response and outputs)."""
    from modaverse.core.atomic import json_text, write_text_atomic
    out_dir = Path(args.output_dir) if args.output_dir else default_out_dir("generate")
    response = out_dir / "response.json"
    if response.exists() and not args.force:
        raise ModaverseError(f"{response}: already exists; pass --force to replace it or choose another --output-dir")
    check_writable(response)
    gen_kwargs = _generation_kwargs(args)  # cheap checks first: fail before any model is built
    from modaverse.llm.prompt import place_media
    from modaverse.media.sniff import check_file

    for f in args.inputs:  # missing, empty or mislabelled, and the placeholders' count: before a model loads
        check_file(Path(f))
    place_media(args.instruction, len(args.inputs))
    from modaverse.pipeline.assistant import ModaVerse

    config = load(args)
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
        from modaverse.cli.display import summary

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
    from modaverse.cli.chat_session import ChatSession, repl
    from modaverse.pipeline.assistant import ModaVerse

    gen_kwargs = _generation_kwargs(args)
    out_dir = Path(args.output_dir) if args.output_dir else default_out_dir("chat")
    print("loading models ...", file=sys.stderr, flush=True)
    pipe = ModaVerse.from_config(load(args))
    return repl(ChatSession(pipe, out_dir, **gen_kwargs))


def register(sub) -> None:
    p = sub.add_parser("generate", help="answer one instruction (with any inputs) as a meta-response",
                       description="Run one request through the assistant: inputs are embedded, the LLM "
                       "answers with a meta-response (a reply and generator invocations), which is written "
                       "to OUTPUT_DIR/response.json. '<media>' in the instruction places inputs inline, in "
                       "order; without it inputs precede the instruction.")
    p.add_argument("instruction", metavar="INSTRUCTION")
    p.add_argument("--input", "-i", dest="inputs", action="append", default=[], metavar="FILE",
                   help="media file (image, video, audio, depth, thermal, IMU); repeatable, any mix")
    p.add_argument("--modality", choices=MODALITIES,
                   help="force the modality of every input (e.g. for .npy maps)")
    add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where response.json goes (default: outputs/generate-TIME)")
    p.add_argument("--json", action="store_true", help="print the response JSON instead of a summary")
    p.add_argument("--force", action="store_true", help="replace an existing D/response.json")
    p.add_argument("--no-render", action="store_true", help="only the meta-response; do not run the generators")
    add_checkpoint_arg(p)
    _add_generation_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat",
                       description="A multi-turn chat. Commands: /attach FILE [MODALITY], /reset, /save PATH, "
                       "/help, /quit. Each turn's response is saved as JSON in the output folder.")
    add_config_args(p)
    p.add_argument("--output-dir", "-o", metavar="D", help="where turn responses go (default: outputs/chat-TIME)")
    add_checkpoint_arg(p)
    _add_generation_args(p)
    p.set_defaults(func=cmd_chat)
