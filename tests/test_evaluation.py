"""Benchmark metrics: the reference implementations, fed through our readers."""

import json
import shutil

import pytest

from modaverse.evaluation.paper.captions import CaptionError, read_predictions, read_references

from .conftest import run_cli

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need Java (make setup)")

REFS = {
    1: ["A man is riding a horse on the beach.", "A person rides a brown horse along the shore."],
    2: ["Two dogs play with a red ball in the grass.", "Dogs playing in a field with a ball."],
    3: ["A plate of pasta with tomato sauce.", "Spaghetti with red sauce on a white plate."],
    4: ["A red bus drives down a city street.", "A double decker bus on a busy road."],
}
PREDS = {1: "A man riding a horse on a beach.", 2: "Two dogs are playing with a ball.",
         3: "A plate of spaghetti.", 4: "A bus on the street in the city."}


def _coco_files(tmp_path):
    """The same set as COCO annotation and results files, the reference code's own inputs."""
    ann = {"images": [{"id": k} for k in REFS], "info": {}, "licenses": [], "type": "captions",
           "annotations": [{"image_id": k, "id": 10 * k + j, "caption": c}
                           for k, cs in REFS.items() for j, c in enumerate(cs)]}
    res = [{"image_id": k, "caption": c} for k, c in PREDS.items()]
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path / "ann.json", tmp_path / "res.json"


@needs_java
def test_caption_metrics_equal_the_reference_pipeline(tmp_path, monkeypatch):
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    ann, res = _coco_files(tmp_path)
    # ours, from our JSONL layout, through the console script
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": k, "caption": c}) + "\n" for k, c in PREDS.items()))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"id": k, "captions": c}) + "\n" for k, c in REFS.items()))
    r = run_cli("eval", "captions", "--predictions", tmp_path / "p.jsonl", "--references", tmp_path / "r.jsonl")
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    assert ours["items"] == 4
    # the coco-caption pipeline on COCO files; its SPICE would download CoreNLP, so it scores 0 here

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(res)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    coco = COCO(str(ann))
    evaluator = coco_eval.COCOEvalCap(coco, coco.loadRes(str(res)))
    evaluator.evaluate()
    names = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4", "METEOR": "METEOR",
             "ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr-D"}
    for theirs, mine in names.items():
        assert ours["metrics"][mine] == pytest.approx(evaluator.eval[theirs], abs=1e-12), mine
    # COCO files are read as they are: the same captions under the same keys as our layout, so the same numbers
    from modaverse.evaluation.paper.captions import read_predictions, read_references

    assert read_predictions(res) == read_predictions(tmp_path / "p.jsonl")
    assert read_references(ann) == read_references(tmp_path / "r.jsonl")


@needs_java
def test_identical_captions_score_one_on_bleu(tmp_path):
    from modaverse.evaluation.paper.captions import score

    refs = {str(k): [v[0]] for k, v in REFS.items()}
    result = score({k: v[0] for k, v in refs.items()}, refs, spice=False)
    for n in range(1, 5):
        assert result["metrics"][f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert result["metrics"]["ROUGE-L"] == pytest.approx(1.0)


def test_caption_inputs_are_checked(tmp_path):
    from modaverse.evaluation.paper.captions import score

    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1, "caption": "a"}\n{"id": 1, "caption": "b"}\n')
    with pytest.raises(CaptionError, match="id 1 is predicted twice"):
        read_predictions(p)
    p.write_text('{"id": 1, "text": "a"}\n')
    with pytest.raises(CaptionError, match='item 1 \\(1\\) has no "caption" string'):
        read_predictions(p)
    r = tmp_path / "r.jsonl"
    r.write_text('{"id": 1, "captions": []}\n')
    with pytest.raises(CaptionError, match="needs \"captions\": a non-empty list"):
        read_references(r)
    with pytest.raises(CaptionError, match="1 referenced item\\(s\\) have no prediction, e.g. 2"):
        score({"1": "a dog"}, {"1": ["a dog"], "2": ["a cat"]})
    with pytest.raises(CaptionError, match="1 predicted item\\(s\\) have no references, e.g. 3"):
        score({"1": "a dog", "3": "x"}, {"1": ["a dog"]})


def test_caption_errors_are_one_line(tmp_path):
    r = run_cli("eval", "captions", "-p", tmp_path / "none.jsonl", "-r", tmp_path / "none.jsonl")
    assert r.returncode == 2 and r.stderr.strip() == f"modaverse: error: {tmp_path / 'none.jsonl'}: no such file"
    (tmp_path / "p.jsonl").write_text('{"id": 1, "caption": "a dog"}\n')
    (tmp_path / "r.jsonl").write_text('{"id": 1, "captions": ["a dog"]}\n')
    no_java = run_cli("eval", "captions", "-p", tmp_path / "p.jsonl", "-r", tmp_path / "r.jsonl",
                      env={"PATH": str(tmp_path)})
    assert no_java.returncode == 2
    assert "caption metrics need Java" in no_java.stderr and len(no_java.stderr.strip().splitlines()) == 1
