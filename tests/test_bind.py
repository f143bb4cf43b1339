"""``modaverse bind`` and ``modaverse eval bind`` on the synthetic world's paired views, end to end."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import run_cli

SMALL = ["--set", "bind.batch_size=8", "--set", "bind.log_every=2", "--set", "bind.save_every=4",
         "--set", "bind.vision_text_steps=6", "--set", "bind.bind_steps=6"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from modaverse.data.synth import synthesize

    out = tmp_path_factory.mktemp("world")
    synthesize(out, 240, seed=3, test_fraction=0.2, shifted_fraction=0.2)
    return out


def entries(world, modality=None):
    rows = [json.loads(line) for line in (world / "media.jsonl").read_text().splitlines()]
    return [r for r in rows if modality is None or r["modality"] == modality]


def test_views_are_paired_with_the_picture_or_video_of_the_same_scene(world):
    from modaverse.media import detect_modality, load_media

    rows = entries(world)
    anchors = {r["media"]: r for r in rows if r["modality"] in ("image", "video")}
    for view, anchor in (("depth", "image"), ("thermal", "image"), ("imu", "video"), ("audio", "video")):
        paired = [r for r in rows if r["modality"] == view and "pair" in r]
        assert len(paired) == sum(1 for a in anchors.values() if a["modality"] == anchor)
        for r in paired[:3]:
            a = anchors[r["pair"]]
            assert a["modality"] == anchor and r["split"] == a["split"] and r["colour"] == a["colour"]
            assert "caption" not in r  # views never carry text
            load_media(world / r["media"], view)
    first_depth = next(r for r in rows if r["modality"] == "depth")
    assert detect_modality(world / first_depth["media"]) == "depth"  # 16-bit PNG in millimetres
    video = next(r for r in rows if r["modality"] == "video")
    assert video["caption"].endswith(f"moving {video['motion']}")
    shifted = [r for r in rows if r["modality"] == "thermal" and r["split"] == "shifted"]
    assert shifted and all(len(r["params"]["shifted"]) == 2 for r in shifted)


def _fit(x, y, classes, train):
    """Held-out accuracy of a logistic regression on raw, downsampled sensor values."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x[train] @ w, y[train]).backward()
        opt.step()
    test = ~train
    return ((x[test] @ w).argmax(1) == y[test]).float().mean().item()


def _labels(rows, key):
    names = sorted({r[key] for r in rows})
    return torch.tensor([names.index(r[key]) for r in rows]), len(names)


def test_sensors_offer_no_shortcut_to_what_they_cannot_see(world):
    """Colour cannot be read off depth, nor colour or shape off the IMU: a classifier on the raw values
    stays near chance there, while the same classifier reads what the sensor does show."""
    from PIL import Image

    depth = [r for r in entries(world, "depth") if "others" not in r]
    x = torch.tensor(np.stack([np.asarray(Image.open(world / r["media"]), np.float32)[::8, ::8].ravel()
                               for r in depth]))
    train = torch.arange(len(depth)) % 3 != 0
    colour, n = _labels(depth, "colour")
    shape, m = _labels(depth, "shape")
    assert _fit(x, colour, n, train) < 0.45  # chance 0.25
    assert _fit(x, shape, m, train) > 0.55  # chance 0.33: the test can fail

    imu = entries(world, "imu")

    def features(arr):  # the subsampled signal, and the displacement its accelerations integrate to
        moved = np.cumsum(arr[:3] - np.median(arr[:3], axis=1, keepdims=True), axis=1).mean(1)
        return np.concatenate([arr[:, ::40].ravel(), moved * 10])

    x = torch.tensor(np.stack([features(np.load(world / r["media"])) for r in imu]), dtype=torch.float32)
    train = torch.arange(len(imu)) % 3 != 0
    for key, ceiling in (("colour", 0.45), ("shape", 0.55)):
        y, k = _labels(imu, key)
        assert _fit(x, y, k, train) < ceiling, key
    y, k = _labels(imu, "motion")
    assert _fit(x[:, -3:], y, k, train) > 0.6  # chance 0.25: the displacement shows the direction


def test_bind_trains_every_tower_and_resumes_exactly(world, tmp_path):
    pairs = world / "media.jsonl"
    a, b = tmp_path / "a", tmp_path / "b"
    r = run_cli("bind", "--config", "tiny-bind", "--pairs", pairs, "-o", a, *SMALL)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[0])
    assert summary["steps"] == 12 and summary["towers"] == ["vision", "text", "audio", "depth", "thermal", "imu"]
    assert sorted(p.name for p in (a / "final").glob("*.safetensors")) == [
        "audio.safetensors", "depth.safetensors", "imu.safetensors", "text.safetensors", "thermal.safetensors",
        "vision.safetensors"]
    assert "bind:" in r.stderr and "vision_text" in r.stderr and "thermal" in r.stderr
    swaps = re.search(r"\((\d+) caption\(s\) with a swapped hard negative\)", r.stderr)
    assert swaps and int(swaps[1]) > 0, r.stderr  # two-object pictures' captions
    # a copy of the run cut back to its step-4 checkpoint (inside the vision-text stage) resumes to the same towers
    shutil.copytree(a, b)
    shutil.rmtree(b / "final")
    shutil.rmtree(b / "step-000008")
    (b / "latest").write_text("step-000004\n")
    r = run_cli("bind", "--config", "tiny-bind", "--pairs", pairs, "-o", b, "--resume", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    from safetensors.torch import load_file

    for f in (a / "final").glob("*.safetensors"):
        ta, tb = load_file(str(f)), load_file(str(b / "final" / f.name))
        assert all(torch.equal(ta[k], tb[k]) for k in ta), f.name
    # every command uses the towers through one key; the text tower carries its tokenizer
    r = run_cli("eval", "bind", "--config", "tiny-bind", "--data", pairs, "--set", f"encoder.tower_weights={a}",
                "--compare", "random=encoder.tower_weights=null", "-o", tmp_path / "bind.json")
    assert r.returncode == 0, r.stderr
    assert "| imu (emergent) | colour (guard: chance is right) |" in r.stdout
    report = json.loads((tmp_path / "bind.json").read_text())
    assert set(report) == {"encoder", "random"}
    bound = report["encoder"]["modalities"]
    assert bound["depth"]["never_paired_with_text"] and not bound["image"]["never_paired_with_text"]
    assert set(bound["image"]["retrieval"]) == {"test", "shifted"}
    objects = bound["image"]["attributes"]["objects"]  # two-object pictures: their whole caption among 54
    assert objects["classes"] == 54 and objects["test"]["n"] > 0
    assert "shifted_axes_zero_shot" in bound["thermal"]["attributes"]["colour"]
    assert report["random"]["notes"] and not report["encoder"]["notes"]


@pytest.mark.parametrize("args,message", [
    (["--pairs", "nope.jsonl"], "bind.pairs nope.jsonl: no such file"),
    (["--towers", "vision"], "trains both towers together"),
    (["--towers", "sonar"], "unknown tower(s) sonar"),
    (["--towers", "vision,text", "--set", "encoder.weights=w.pth"], "are pretrained: their vision and text towers"),
])
def test_bind_refuses_bad_input_in_one_line(world, tmp_path, args, message):
    if "--pairs" not in args:
        args = [*args, "--pairs", world / "media.jsonl"]
    (tmp_path / "w.pth").write_bytes(b"")
    r = run_cli("bind", "--config", "tiny-bind", "-o", tmp_path / "run", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_a_pair_must_name_a_picture_or_video_of_the_file(world, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"media": str(world / entries(world, "depth")[0]["media"]), "modality": "depth",
                               "pair": "elsewhere.png"}) + "\n")
    r = run_cli("bind", "--config", "tiny-bind", "--pairs", bad, "-o", tmp_path / "run", "--towers", "depth")
    assert r.returncode == 2 and "pairs.jsonl:1: pair" in r.stderr and "is not an image or video line" in r.stderr


def test_the_shipped_encoder_perceives_new_files(tmp_path):
    """The offline profiles' bound encoder (configs/checkpoints/imagebind-tiny112) names the colour and shape
    of pictures it has never seen through text alone, and the colour of their thermal views, which never
    saw a word: a random encoder of the same architecture does neither."""
    from modaverse.config import load_config
    from modaverse.data.synth import synthesize
    from modaverse.evaluation.binding import evaluate_binding

    synthesize(tmp_path, 120, seed=99, test_fraction=0.5, shifted_fraction=0.0)
    report = evaluate_binding(load_config("tiny"), tmp_path / "media.jsonl")
    m = report["modalities"]
    assert m["image"]["attributes"]["colour"]["test"]["zero_shot"] >= 0.9
    assert m["image"]["attributes"]["shape"]["test"]["zero_shot"] >= 0.8
    assert m["thermal"]["attributes"]["colour"]["test"]["zero_shot"] >= 0.7
    assert not report["notes"]
    # a subset of the towers (encoder.modalities) scores that subset, and says what it left out
    some = evaluate_binding(load_config("tiny", ["encoder.modalities=[image,thermal]"]), tmp_path / "media.jsonl")
    assert set(some["modalities"]) == {"image", "video", "thermal"}  # one vision tower sees both
    assert some["notes"] == ["not scored: audio, depth, imu (not in encoder.modalities)"]
    assert some["modalities"]["thermal"]["retrieval"] == m["thermal"]["retrieval"]  # its pictures were built


def test_a_moved_checkpoint_finds_its_encoder_towers_through_the_config(tmp_path):
    """A checkpoint records where its encoder's tower files were; shipped in the package (or copied),
    that path is gone, and the profile's own tower files stand in."""
    from modaverse import checkpoint
    from modaverse.config import load_config

    shipped = Path(load_config("tiny").checkpoint)
    moved = tmp_path / "tiny"
    shutil.copytree(shipped, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["config"]["encoder"]["tower_weights"] = "/nowhere/imagebind-tiny112"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    config = checkpoint.config_for(moved, "tiny")
    assert config.encoder.tower_weights == load_config("tiny").encoder.tower_weights
    assert config.checkpoint == str(moved)
