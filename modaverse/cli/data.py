"""``data``: synthesise, validate, import training records, and print their schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modaverse.cli.common import Parser, add_config_args, fraction, load, positive_int
from modaverse.core.errors import ModaverseError


def cmd_data(args: argparse.Namespace) -> int:
    """Training data: synth, validate, import, schema."""
    from tqdm.auto import tqdm

    if args.action == "schema":
        from modaverse.data.records import record_schema

        print(json.dumps(record_schema(), indent=2))
        return 0
    if args.action == "synth":
        from modaverse.data.synth import SPLITS, synthesize

        out = Path(args.output)
        held = [f"{split}.jsonl" for split in SPLITS if (out / f"{split}.jsonl").exists()]
        if held and not args.force:
            raise ModaverseError(f"{out}: already holds {', '.join(held)}; pass --force to replace them")
        if args.test_fraction + args.shifted_fraction > 1:
            raise ModaverseError(f"--test-fraction {args.test_fraction} and --shifted-fraction "
                                 f"{args.shifted_fraction} add up to more than 1")
        per = max(1, args.per_input)
        with tqdm(total=-(-args.num // per), unit="input", desc="synth", disable=None, file=sys.stderr,
                  leave=False) as bar:
            paths = synthesize(out, args.num, args.seed, args.test_fraction, args.shifted_fraction, per,
                               on_progress=bar.update, views=not args.no_views)
        count = {split: len(p.read_text().splitlines()) for split, p in paths.items()}
        print(f"wrote {count['train']} training, {count['test']} in-distribution held-out and {count['shifted']} "
              f"shifted held-out conversations to {out} (train.jsonl, test.jsonl, shifted.jsonl; "
              f"each file's split and parameters: media.jsonl" +
              ("" if args.no_views else "; its depth, thermal, IMU and audio views for `modaverse bind` too") + ")")
        if args.benchmark_sets:
            from modaverse.data.synth import write_benchmark_set

            for modality in ("image", "video", "audio"):
                folder = write_benchmark_set(out / "benchmarks" / modality, modality, args.benchmark_sets, args.seed + 1)
                print(f"wrote {args.benchmark_sets} {modality} item(s) in `modaverse eval run`'s layout: {folder}")
        return 0
    if args.action == "validate":
        from modaverse.data.validate import report
        from modaverse.pipeline.assistant import tokenizer_for

        if not Path(args.file).is_file():
            raise ModaverseError(f"{args.file}: no such file")
        config = load(args)
        lines, counts, good = report(args.file, config, tokenizer_for(config, config.checkpoint), limit=args.limit,
                                     decode=not args.no_decode)
        for line in lines:
            print(line)
        bad = sum(counts.values())
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        print(f"{args.file}: {good} record(s) ok, {bad} bad" + (f" ({detail})" if bad else ""))
        return 1 if bad else 0
    # import
    from modaverse.core.atomic import write_text_atomic
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


def register(sub) -> None:
    p = sub.add_parser("data", help="synthesise, validate or import training data",
                       description="synth: write the synthetic benchmark set (media + train/test/shifted JSONL). "
                       "validate FILE: report bad records with line numbers (exit 1 if any). "
                       "import FORMAT SRC: convert official / llava / pandagpt JSON to our JSONL. "
                       "schema: print the JSON Schema of one record.")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
    q = dsub.add_parser("synth", help="write the synthetic benchmark set")
    q.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for media/, train.jsonl, test.jsonl, shifted.jsonl")
    q.add_argument("--num", type=positive_int, default=6000, metavar="N", help="conversations in all (default 6000)")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    q.add_argument("--test-fraction", type=fraction, default=0.1, metavar="F",
                   help="share held out in distribution: new files from the training ranges (default 0.1)")
    q.add_argument("--shifted-fraction", type=fraction, default=0.1, metavar="F",
                   help="share held out with parameters outside the training ranges (default 0.1)")
    q.add_argument("--per-input", type=positive_int, default=1, metavar="K",
                   help="conversations sharing each media file (default 1)")
    q.add_argument("--benchmark-sets", type=positive_int, metavar="N",
                   help="also write N new items per modality under DIR/benchmarks/{image,video,audio}, "
                   "in the dataset layout of `modaverse eval run` (try the runners offline)")
    q.add_argument("--no-views", action="store_true",
                   help="skip the depth, thermal, IMU and audio views of each picture and video (the pairs "
                   "`modaverse bind` learns from; a set only for `train` is written twice as fast without them)")
    q.add_argument("--force", action="store_true", help="replace existing split files")
    q.set_defaults(func=cmd_data)
    q = dsub.add_parser("validate", help="report bad records with line numbers")
    q.add_argument("file", metavar="FILE")
    add_config_args(q)
    q.add_argument("--limit", type=positive_int, default=50, help="problems printed at most (default 50)")
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
    q.add_argument("--limit", type=positive_int, default=20, help="skipped items reported at most (default 20)")
    q.set_defaults(func=cmd_data)
    q = dsub.add_parser("schema", help="print the JSON Schema of a record")
    q.set_defaults(func=cmd_data)
