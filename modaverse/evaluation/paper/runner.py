"""``modaverse eval run BENCHMARK --data DIR``: one paper table, reproduced for a checkpoint.

A run drives the assistant over a local copy of the dataset and scores what it produced:

1. ``DIR/annotations.jsonl`` lists the items (``{"id", "file", "captions": [...]}``); see
   docs/evaluation.md for the layout and how to build it from the official releases.
2. Captioning benchmarks send each input with the config's request for the benchmark and
   keep the reply's text. Inputs are encoded a batch at a time, in batches aligned to
   fixed item positions, so a resumed run feeds the LLM bit-identical embeddings.
3. Generation benchmarks send the request with the first reference caption and keep the
   file the matching generator rendered, under ``OUT/outputs/``.
4. Every item's outcome is appended to ``OUT/predictions.jsonl`` and flushed as it comes;
   a rerun skips what is there (a half-written last line is dropped), so a killed run
   resumes where it stopped and ends with the same table. Decoding is greedy and every
   render is seeded, so rerunning an item gives the same output.
5. The metrics (:mod:`.captions`, :mod:`.generation`) go to ``OUT/results.json`` and, beside
   the paper's figures, to ``OUT/results.md``.

An item whose input cannot be decoded, or for which the model calls no generator, is
recorded with the reason and left out of the scores; the table says how many.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from modaverse.config import Config
from modaverse.core.atomic import write_json_atomic, write_text_atomic
from modaverse.core.errors import MediaError, ModaverseError
from modaverse.core.jsonl import drop_partial_line, json_objects, numbered_lines
from modaverse.evaluation.paper import tasks
from modaverse.evaluation.paper.generation import SUFFIXES
from modaverse.evaluation.paper.tasks import BENCHMARKS, Benchmark, check_instructions

ANNOTATIONS = "annotations.jsonl"
PREDICTIONS = "predictions.jsonl"
MANIFEST = "generated.jsonl"
IDENTITY = "run.json"


class BenchmarkError(ModaverseError):
    """A dataset or output folder that a run cannot use; names the file and the line."""


@dataclass(frozen=True)
class Example:
    id: str
    file: Path
    captions: tuple[str, ...]


def read_dataset(data: str | Path, bench: Benchmark, limit: int | None = None) -> list[Example]:
    """The first ``limit`` items of ``DIR/annotations.jsonl``, checked before any work starts."""
    data = Path(data)
    if not data.is_dir():
        raise BenchmarkError(f"{data}: no such folder (expected a dataset folder holding {ANNOTATIONS})")
    path = data / ANNOTATIONS
    out: list[Example] = []
    seen: set[str] = set()
    for number, row in json_objects(path, BenchmarkError, "annotations", shape="an object with id, file and captions"):
        where = f"{path}:{number}"
        key, file = row.get("id"), row.get("file")
        captions = row.get("captions", [row["caption"]] if isinstance(row.get("caption"), str) else None)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise BenchmarkError(f"{where}: \"id\" must be a string or a number")
        if not isinstance(file, str) or not file:
            raise BenchmarkError(f"{where}: \"file\" must name the {bench.modality} file, relative to {data}")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
            raise BenchmarkError(f"{where}: \"captions\" must be a non-empty list of non-empty strings")
        if str(key) in seen:
            raise BenchmarkError(f"{where}: id {key} appears twice")
        media = data / file
        if not media.is_file():
            raise BenchmarkError(f"{where}: {file}: no such file in {data}")
        if media.suffix.lower() not in SUFFIXES[bench.modality]:
            raise BenchmarkError(f"{where}: {file}: not a {bench.modality} file for {bench.name} "
                                 f"(expected {', '.join(SUFFIXES[bench.modality])})")
        seen.add(str(key))
        out.append(Example(str(key), media, tuple(captions)))
        if limit is not None and len(out) == limit:
            break
    if not out:
        raise BenchmarkError(f"{path}: no items")
    return out


def _identity(bench: Benchmark, data: Path, config: Config) -> dict:
    return {"benchmark": bench.name, "data": str(data.resolve()), "config": config.name,
            "checkpoint": config.checkpoint, "request": tasks.request(bench, config.eval.instructions)}


def _open_run(out: Path, identity: dict) -> dict[str, dict]:
    """The predictions already made by this run; refuses a folder that holds another run."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / IDENTITY
    if marker.is_file():
        try:
            held = json.loads(marker.read_text())
        except json.JSONDecodeError:
            held = None
        if held != identity:
            diff = next((k for k in identity if not isinstance(held, dict) or held.get(k) != identity[k]), "?")
            raise BenchmarkError(f"{out}: holds a different run ({diff} differs: "
                                 f"{held.get(diff) if isinstance(held, dict) else held!r}); "
                                 "choose another --output, or delete the folder to start over")
    elif (out / PREDICTIONS).exists():
        raise BenchmarkError(f"{out}: has {PREDICTIONS} but no {IDENTITY}; not a folder this command wrote")
    else:
        write_json_atomic(marker, identity)
    path = out / PREDICTIONS
    drop_partial_line(path)
    done: dict[str, dict] = {}
    if path.is_file():
        for number, text in numbered_lines(path, BenchmarkError, "predictions"):
            try:
                row = json.loads(text)
                done[str(row["id"])] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BenchmarkError(f"{path}:{number}: not a prediction this command wrote; "
                                     "delete the folder to start over") from None
    return done


class _Journal:
    """Appends one prediction per line and flushes it to disk before the next item starts;
    ``done`` (the run's predictions by id) is kept up to date, so scoring need not read the file back."""

    def __init__(self, path: Path, done: dict[str, dict]):
        self.handle, self.done = path.open("a", encoding="utf-8"), done

    def add(self, row: dict) -> None:
        self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.done[row["id"]] = row

    def close(self) -> None:
        self.handle.close()


def _bar(total: int, done: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="item", file=sys.stderr,
                disable=None if progress is None else not progress, dynamic_ncols=True)


def _caption_items(pipe, bench: Benchmark, todo: list[tuple[int, Example]], examples: list[Example],
                   journal: _Journal, bar) -> None:
    from modaverse.llm.prompt import Message

    request = tasks.request(bench, pipe.config.eval.instructions)
    size = pipe.encoder.batch_size
    wanted = {i for i, _ in todo}
    for start in range(0, len(examples), size):
        block = [i for i in range(start, min(start + size, len(examples)))]
        if not wanted.intersection(block):
            continue
        loaded, errors = {}, {}
        for i in block:  # the whole aligned block, done items included: same batches as an uninterrupted run
            try:
                loaded[i] = pipe.encoder.load(examples[i].file, bench.modality)
            except MediaError as e:
                errors[i] = str(e)
        order = sorted(loaded)
        embeddings = pipe.encoder.encode([loaded[i] for i in order]) if order else None
        for i in block:
            if i not in wanted:
                continue
            ex = examples[i]
            if i in errors:
                journal.add({"id": ex.id, "error": errors[i]})
            else:
                feats = embeddings[order.index(i)][None]
                _, embeds = pipe.prepare_messages([Message("user", request, (bench.modality,))], feats,
                                                  reserve=pipe.config.generation.max_new_tokens)
                reply = pipe.respond(embeds, temperature=0.0)
                journal.add({"id": ex.id, "caption": reply.meta.text, "meta_response": reply.meta.as_dict()})
            bar.update(1)


def _output_folder(out: Path, index: int, key: str) -> Path:
    return out / "outputs" / f"{index:06d}-{re.sub(r'[^A-Za-z0-9._-]', '_', key)[:40]}"


def _generate_items(pipe, bench: Benchmark, todo: list[tuple[int, Example]], out: Path,
                    journal: _Journal, bar) -> None:
    template = tasks.request(bench, pipe.config.eval.instructions)
    for i, ex in todo:
        folder = _output_folder(out, i, ex.id)
        shutil.rmtree(folder, ignore_errors=True)  # a render cut off by a kill
        request = template.replace("{caption}", ex.captions[0].strip().rstrip("."))
        turn = pipe(request, output_dir=folder, temperature=0.0)
        files = [p for p in turn.outputs if p.suffix.lower() in SUFFIXES[bench.modality]]
        row = {"id": ex.id, "request": request, "prompt": ex.captions[0], "meta_response": turn.meta.as_dict()}
        if files:
            row["file"] = str(files[0].relative_to(out))
        elif turn.errors:
            row["error"] = "; ".join(turn.errors)
        else:
            row["error"] = f"the reply called no {bench.capability} generator"
        journal.add(row)
        bar.update(1)


def _score(bench: Benchmark, examples: list[Example], done: dict[str, dict], out: Path, config: Config,
           spice: bool, progress: bool | None) -> tuple[dict, list[str]]:
    """(metrics, notes) over the items that produced something."""
    ok = [ex for ex in examples if "error" not in done[ex.id]]
    if bench.task == "caption":
        from modaverse.evaluation.paper.captions import score

        if not ok:
            return {}, ["no item was captioned"]
        result = score({ex.id: done[ex.id]["caption"] for ex in ok}, {ex.id: list(ex.captions) for ex in ok},
                       spice=spice)
        return result["metrics"], result["notes"]
    from modaverse.evaluation.paper.extractors import Extractors
    from modaverse.evaluation.paper.generation import GenerationEvalError, Item, score

    if len(ok) < 2:
        return {}, [f"{len(ok)} item(s) produced a {bench.modality}; the metrics need at least 2"]
    generated = [Item(out / done[ex.id]["file"], ex.captions[0]) for ex in ok]
    reference = [Item(ex.file) for ex in examples]
    try:
        result = score(bench.modality, generated, reference, Extractors(config.eval, progress), seed=config.eval.seed)
    except GenerationEvalError as e:
        return {}, [str(e)]
    return result["metrics"], result["notes"]


def _decimals(printed: str) -> int:
    return len(printed.partition(".")[2])


def table(bench: Benchmark, results: dict) -> str:
    """The paper's table for this benchmark: its row for ModaVerse, then this run's."""
    head = " | ".join(f"{c.header} {'↑' if c.higher_is_better else '↓'}" for c in bench.columns)
    paper = " | ".join(c.paper for c in bench.columns)
    ours = " | ".join("n/a" if results["columns"][c.header] is None
                      else f"{results['columns'][c.header]:.{_decimals(c.paper)}f}" for c in bench.columns)
    label = f"{results['config']}" + (f" @ {Path(results['checkpoint']).name}" if results["checkpoint"] else "")
    lines = [f"## {bench.title}", "", f"| | {head} |", "|---" * (len(bench.columns) + 1) + "|",
             f"| ModaVerse (paper) | {paper} |", f"| {label} | {ours} |", "",
             f"{results['scored']} of {results['items']} items scored; {results['failed']} failed "
             f"(see {PREDICTIONS})."]
    if results["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in results["notes"]]
    return "\n".join(lines) + "\n"


def run_benchmark(name: str, data: str | Path, config: Config, out: str | Path, *, limit: int | None = None,
                  spice: bool = True, progress: bool | None = None, pipe=None) -> dict:
    """Runs (or resumes) one benchmark and writes predictions, results.json and results.md into ``out``."""
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    try:
        check_instructions(config.eval.instructions)
    except ValueError as e:
        raise BenchmarkError(str(e)) from None
    bench, data, out = BENCHMARKS[name], Path(data), Path(out)
    examples = read_dataset(data, bench, limit)
    done = _open_run(out, _identity(bench, data, config))
    todo = [(i, ex) for i, ex in enumerate(examples) if ex.id not in done]
    if todo:
        from modaverse.pipeline.assistant import ModaVerse

        pipe = pipe or ModaVerse.from_config(config)
        if bench.capability and bench.capability not in pipe.capabilities:
            raise BenchmarkError(f"{name} needs a {bench.capability} generator; the config's zoo has "
                                 f"{', '.join(pipe.capabilities) or 'none'}")
        journal = _Journal(out / PREDICTIONS, done)
        with _bar(len(examples), len(examples) - len(todo), name, progress) as bar:
            try:
                if bench.task == "caption":
                    _caption_items(pipe, bench, todo, examples, journal, bar)
                else:
                    _generate_items(pipe, bench, todo, out, journal, bar)
            finally:
                journal.close()
    if bench.task == "generate":  # the outputs as `modaverse eval generation` reads them
        write_text_atomic(out / MANIFEST, "".join(
            json.dumps({"file": done[ex.id]["file"], "prompt": ex.captions[0]}, ensure_ascii=False) + "\n"
            for ex in examples if "file" in done[ex.id]))
    metrics, notes = _score(bench, examples, done, out, config, spice, progress)
    failed = [ex.id for ex in examples if "error" in done[ex.id]]
    results = {
        "benchmark": name, "title": bench.title, "data": str(data), "config": config.name,
        "checkpoint": config.checkpoint, "items": len(examples), "scored": len(examples) - len(failed),
        "failed": len(failed), "failed_ids": failed[:20],
        "columns": {c.header: None if c.metric not in metrics else round(metrics[c.metric] * c.scale, 6)
                    for c in bench.columns},
        "paper": {c.header: float(c.paper) for c in bench.columns},
        "metrics": metrics, "notes": notes,
    }
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", table(bench, results))
    return results
