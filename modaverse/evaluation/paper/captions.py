"""Caption metrics through pycocoevalcap (``modaverse eval captions``), never re-implemented.

Published captioning numbers (COCO, AudioCaps, MSR-VTT; ModaVerse Tables 3, 5 and 7) come
from the coco-caption code: Stanford PTB tokenisation, then BLEU-1..4, METEOR 1.5,
ROUGE-L, CIDEr-D and SPICE. A re-implementation drifts in the third digit (tokenisation
alone moves BLEU-4 by about a point), so this module only feeds the reference code and
checks what goes in:

- predictions: one caption per item; references: one or more per item;
- every predicted item must have references, and every referenced item a prediction
  (the reference code silently scores whatever it is given);
- Java must be on PATH (the tokenizer, METEOR and SPICE are Java programs);
- SPICE also needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use; offline
  its absence is reported and SPICE and SPIDEr (the mean of CIDEr-D and SPICE) are left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.core.jsonl import numbered_lines

CORENLP_URL = "http://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"


class CaptionError(ModaverseError):
    """Predictions or references that cannot be scored; names the file and the item."""


def _read(path: str | Path, what: str) -> list[dict]:
    """JSON (a list, or COCO's ``{"annotations": [...]}``) or JSONL, one object per item."""
    path = Path(path)
    lines = list(numbered_lines(path, CaptionError, what))
    try:
        whole = json.loads("".join(text for _, text in lines))
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "annotations" in whole:
        rows = whole["annotations"]
    elif isinstance(whole, list):
        rows = whole
    else:
        rows = []
        for number, text in lines:
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise CaptionError(f"{path}:{number}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CaptionError(f"{path}: expected JSON objects, one per item")
    return rows


def _key(row: dict, path: Path, n: int) -> str:
    """The item's id; in COCO annotations ``id`` names the caption and ``image_id`` the item."""
    for k in ("image_id", "video_id", "audio_id", "id"):
        if k in row:
            return str(row[k])
    raise CaptionError(f"{path}: item {n} has no id (give one of id, image_id, video_id, audio_id)")


def read_predictions(path: str | Path) -> dict[str, str]:
    """``{"id", "caption"}`` per item (COCO results files, with ``image_id``, work as they are)."""
    out: dict[str, str] = {}
    for n, row in enumerate(_read(path, "predictions"), 1):
        key, caption = _key(row, Path(path), n), row.get("caption")
        if not isinstance(caption, str):
            raise CaptionError(f"{path}: item {n} ({key}) has no \"caption\" string")
        if key in out:
            raise CaptionError(f"{path}: item {n}: id {key} is predicted twice")
        out[key] = caption
    return out


def read_references(path: str | Path) -> dict[str, list[str]]:
    """``{"id", "captions": [...]}`` per item, or one ``{"id", "caption"}`` per reference (COCO)."""
    out: dict[str, list[str]] = {}
    for n, row in enumerate(_read(path, "references"), 1):
        key = _key(row, Path(path), n)
        captions = row.get("captions", [row["caption"]] if "caption" in row else None)
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptionError(f"{path}: item {n} ({key}) needs \"captions\": a non-empty list of strings")
        out.setdefault(key, []).extend(captions)
    return out


def spice_status() -> str | None:
    """None when SPICE can run, else why not (and how to fix it)."""
    from pycocoevalcap.spice import get_stanford_models as g

    lib = Path(g.SPICEDIR) / g.SPICELIB
    missing = [f"{g.JAR}{s}.jar" for s in ("", "-models") if not (lib / f"{g.JAR}{s}.jar").is_file()]
    if missing:
        return (f"SPICE needs {' and '.join(missing)} in {lib}; extract them from {CORENLP_URL} "
                "(pycocoevalcap downloads it on first use when online)")
    return None


@contextlib.contextmanager
def _captured_output() -> Iterator[None]:
    """Routes what the reference code and its Java programs print (progress chatter) to a file;
    a failure inside re-raises with the last line they printed."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log):  # Python-level prints too, when sys.stdout is not fd 1
                yield
        except Exception as e:
            sys.stdout.flush()
            log.seek(0)
            last = [line for line in log.read().splitlines() if line.strip()][-1:] or [""]
            raise CaptionError(f"pycocoevalcap failed: {type(e).__name__}: {e} {last[0]}".strip()) from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def score(predictions: dict[str, str], references: dict[str, list[str]], spice: bool = True) -> dict:
    """Corpus-level scores, as coco-caption reports them, plus which items were scored."""
    if shutil.which("java") is None:
        raise CaptionError("caption metrics need Java (the PTB tokenizer and METEOR are Java programs): "
                           "install default-jre-headless (`make setup` does)")
    missing = sorted(set(references) - set(predictions))
    unknown = sorted(set(predictions) - set(references))
    if unknown:
        raise CaptionError(f"{len(unknown)} predicted item(s) have no references, e.g. {unknown[0]}")
    if missing:
        raise CaptionError(f"{len(missing)} referenced item(s) have no prediction, e.g. {missing[0]}")
    if not predictions:
        raise CaptionError("no items to score")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = sorted(references)
    with _captured_output():  # the reference code and its Java programs print as they go
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in keys})
        res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in keys})
        bleu, _ = Bleu(4).compute_score(gts, res)
        result = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
        result["METEOR"] = float(Meteor().compute_score(gts, res)[0])
        result["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        result["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
        why_not = spice_status() if spice else "SPICE and SPIDEr skipped (--no-spice)"
        if why_not is None:
            from pycocoevalcap.spice.spice import Spice

            result["SPICE"] = float(Spice().compute_score(gts, res)[0])
            result["SPIDEr"] = (result["CIDEr-D"] + result["SPICE"]) / 2
    return {"items": len(keys), "metrics": result, "notes": [why_not] if why_not else []}
