"""``eval``: the paper's benchmarks (run, list, captions, generation) and invocation accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modaverse.cli.common import Parser, add_checkpoint_arg, add_config_args, count, load, positive_int
from modaverse.core.errors import ModaverseError


def cmd_eval(args: argparse.Namespace) -> int:
    """Benchmarks: `run` (a paper table), `list`, `captions`, `generation`, `roundtrip`, `invocations`."""
    if args.benchmark == "list":
        from modaverse.evaluation.paper.tasks import BENCHMARKS

        for b in BENCHMARKS.values():
            paper = ", ".join(f"{c.header} {c.paper}" for c in b.columns)
            print(f"{b.name:15s} {b.title}: {paper}\n{'':15s} request: {b.instruction}")
        return 0
    if args.benchmark == "captions":
        from modaverse.evaluation.paper.captions import read_predictions, read_references, score

        result = score(read_predictions(args.predictions), read_references(args.references),
                       spice=not args.no_spice)
    elif args.benchmark == "generation":
        from modaverse.config import load_config
        from modaverse.evaluation.paper.extractors import Extractors
        from modaverse.evaluation.paper.generation import read_side, score

        # Scoring outside a run defaults to the published feature networks, never the tiny profile's random ones.
        config = load_config(args.config or "modaverse-7b", args.overrides)
        result = score(args.kind, read_side(args.generated, args.kind, "generated"),
                       read_side(args.reference, args.kind, "reference"), Extractors(config.eval),
                       seed=config.eval.seed)
    elif args.benchmark == "bind":
        return _eval_bind(args)
    elif args.benchmark == "roundtrip":
        from modaverse.evaluation.roundtrip import loop, roundtrip

        config = load(args)
        result = roundtrip(config, args.capability, n=args.samples) if args.samples else {}
        if args.loop:
            result["loop"] = loop(config, args.loop)
        if args.output:
            from modaverse.core.atomic import write_json_atomic

            write_json_atomic(Path(args.output), result)
            print(f"wrote {args.output}", file=sys.stderr)
    elif args.benchmark == "run":
        from modaverse.evaluation.paper.runner import run_benchmark

        config = load(args)
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
        from modaverse.evaluation.invocations import evaluate_invocations

        for data in args.data:
            if not Path(data).is_file():
                raise ModaverseError(f"{data}: no such file")
        names = [Path(d).stem for d in args.data]
        if len(set(names)) < len(names):
            raise ModaverseError(f"--data: two files share a name ({', '.join(names)}); scores are reported by file name")
        from modaverse.pipeline.assistant import ModaVerse

        config = load(args)
        pipe, splits, every = ModaVerse.from_config(config), {}, []
        for name, data in zip(names, args.data, strict=True):
            splits[name] = evaluate_invocations(config, data, limit=args.limit, pipe=pipe)
            every += [{"split": name, **m} for m in splits[name].pop("all_mistakes")]
        result = splits[names[0]] if len(names) == 1 else {"splits": splits}
        shown = sum(len(r["first_mistakes"]) for r in splits.values())
        if args.mistakes:
            from modaverse.core.atomic import write_text_atomic

            write_text_atomic(Path(args.mistakes), "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in every))
            print(f"wrote all {len(every)} mistake(s) to {args.mistakes}", file=sys.stderr)
        elif len(every) > shown:
            print(f"modaverse: note: {len(every)} mistakes, {shown} shown; "
                  "--mistakes PATH writes them all", file=sys.stderr)
    for note in result.get("notes", []):
        print(f"modaverse: note: {note}", file=sys.stderr)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _eval_bind(args: argparse.Namespace) -> int:
    """Zero-shot, retrieval and probe accuracy of the encoder's towers; with --compare, beside another encoder."""
    from modaverse.core.atomic import write_json_atomic, write_text_atomic
    from modaverse.evaluation.binding import evaluate_binding, table

    config = load(args)
    reports = {args.name: evaluate_binding(config, args.data, args.probe_data)}
    for other in args.compare or ():
        name, _, overrides = other.partition("=")
        from modaverse.config import load_config

        reports[name] = evaluate_binding(load_config(args.config or "tiny", [*args.overrides, *overrides.split(";")]
                                                     if overrides else args.overrides), args.data, args.probe_data)
    text = table(reports)
    print(text)
    for name, r in reports.items():
        for note in r["notes"]:
            print(f"modaverse: note: {name}: {note}", file=sys.stderr)
    if args.output:
        write_json_atomic(Path(args.output), reports)
        write_text_atomic(Path(args.output).with_suffix(".md"), text)
        print(f"wrote {args.output} and {Path(args.output).with_suffix('.md')}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model: the paper's benchmarks and their metrics",
                       description="run: reproduce one of the paper's tables over a local dataset copy. "
                       "captions / generation: score existing outputs. invocations: meta-response accuracy. "
                       "bind: what the encoder perceives. roundtrip: whether the zoo renders what it is asked. "
                       "See docs/evaluation.md.")
    esub = p.add_subparsers(dest="benchmark", metavar="COMMAND", required=True, parser_class=Parser)
    from modaverse.evaluation.paper.tasks import BENCHMARKS

    q = esub.add_parser("run", help="run a paper benchmark and write its table",
                        description="Drives the assistant over DIR (DIR/annotations.jsonl: one "
                        '{"id", "file", "captions": [...]} per item, files relative to DIR), appending each '
                        "prediction to OUT/predictions.jsonl as it comes (a rerun resumes), then writes "
                        "OUT/results.json and OUT/results.md with the paper's figures beside ours.")
    q.add_argument("name", metavar="BENCHMARK", choices=list(BENCHMARKS), help=" | ".join(BENCHMARKS))
    q.add_argument("--data", required=True, metavar="DIR", help="the dataset folder (docs/evaluation.md)")
    q.add_argument("--limit", type=positive_int, metavar="N", help="only the first N items")
    q.add_argument("--output", "-o", metavar="OUT", help="run folder (default: runs/eval/BENCHMARK)")
    q.add_argument("--no-spice", action="store_true", help="skip SPICE (and so SPIDEr) even when available")
    add_config_args(q)
    add_checkpoint_arg(q)
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
    add_config_args(q, default="modaverse-7b, whose eval.* keys name the published feature-network weights")
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("bind", help="what each encoder tower perceives: zero-shot, retrieval, probes",
                        description="For each modality and attribute of a pairs file's held-out splits (test, "
                        "shifted; a synthetic set's media.jsonl): zero-shot top-1 through text prompts (emergent for "
                        "audio, depth, thermal and IMU, never paired with text), retrieval R@1/R@5 of each file's "
                        "own picture, video or caption, and an MLP probe trained on the training split. Attributes "
                        "a sensor cannot see are guards that must stay at chance. See docs/imagebind.md.")
    q.add_argument("--data", required=True, metavar="FILE", help="pairs file with held-out splits (media.jsonl)")
    q.add_argument("--probe-data", metavar="FILE", help="pairs file whose training split trains the probes "
                   "(default: --data's own)")
    q.add_argument("--name", default="encoder", help="column name of this encoder in the table (default: encoder)")
    q.add_argument("--compare", action="append", metavar="NAME=KEY=VALUE;...",
                   help="another encoder beside it: a name and ;-separated overrides, e.g. "
                   "'random=encoder.tower_weights=null' (repeatable)")
    q.add_argument("--output", "-o", metavar="OUT.json", help="write the reports (and OUT.md, the table)")
    add_config_args(q)
    add_checkpoint_arg(q)
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("roundtrip", help="does a render show what its prompt named (the zoo's generators)",
                        description="Renders every caption of the synthetic world's vocabulary SAMPLES times with "
                        "each capability of the config's zoo (text-to-image, text-to-video, text-to-audio, "
                        "image-editing), reads the files back and judges each twice: with checks that need no network "
                        "(colours, shape outlines, the centroid's path, pitch and spectral flatness, pixels kept "
                        "by an edit) and with the config's bound encoder, zero-shot; both judges also score real "
                        "samples of the world (docs/zoo.md).")
    add_config_args(q)
    q.add_argument("--capability", action="append", metavar="CAP", help="only this capability (repeatable)")
    q.add_argument("--samples", type=count, default=20, metavar="N", help="renders per caption (default 20; 0: none)")
    q.add_argument("--loop", type=positive_int, metavar="N", help="also the whole loop on N held-out pictures: "
                   "the assistant draws each again, then describes its drawing (colour and shape kept?)")
    q.add_argument("--output", "-o", metavar="OUT.json", help="also write the report here")
    q.set_defaults(func=cmd_eval)
    q = esub.add_parser("invocations", help="capability accuracy and prompt match of meta-responses",
                        description="For each record of --data, answer the conversation up to its last "
                        "assistant message and compare: capability accuracy, prompt exact match and BLEU (JSON), "
                        "overall, per form of record (text-only, media, multi-turn, media-bearing) and per "
                        "capability. Several files (e.g. a synthetic set's test.jsonl and shifted.jsonl) are "
                        'scored one by one and reported under "splits", by file name.')
    q.add_argument("--data", required=True, nargs="+", metavar="FILE", help="JSONL file(s) in the training format")
    add_config_args(q)
    add_checkpoint_arg(q)
    q.add_argument("--limit", type=positive_int, metavar="N", help="score only the first N records")
    q.add_argument("--mistakes", metavar="PATH", help="write every wrong answer (line, id, expected, got) as JSONL")
    q.set_defaults(func=cmd_eval)
