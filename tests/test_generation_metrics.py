"""FID / IS / FD / CLIPSIM: the feature-extractor ports against upstream, and the statistics."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modaverse.config import EvalConfig, load_config
from modaverse.core.errors import WeightsError
from modaverse.evaluation.paper.extractors import Extractors
from modaverse.evaluation.paper.generation import (
    GenerationEvalError,
    Item,
    frechet_distance,
    inception_score,
    score,
)
from modaverse.evaluation.paper.inception import FIDInception
from modaverse.evaluation.paper.panns import Cnn14
from tests import media_factory
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
sys.path.insert(0, str(FIXTURES))
from recipe import fill  # noqa: E402


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURES / "expected.safetensors"))


def test_inception_port_matches_torch_fidelity(expected):
    """Same weights (by key), same uint8 images: pool3 and unbiased logits agree with torch-fidelity's module."""
    net = fill(FIDInception())
    with torch.no_grad():
        pool, logits = net(expected["images"])
    torch.testing.assert_close(pool, expected["inception_pool"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, expected["inception_logits"], rtol=1e-4, atol=1e-4)


def test_cnn14_port_matches_panns_inference(expected):
    """Front end (torch.stft + Slaney mel) and network agree with panns-inference on torchlibrosa."""
    net = fill(Cnn14())
    with torch.no_grad():
        torch.testing.assert_close(net.log_mel(expected["waves"]), expected["panns_logmel"], rtol=1e-4, atol=1e-3)
        embedding, logits = net(expected["waves"])
    torch.testing.assert_close(embedding, expected["panns_embedding"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(logits, expected["panns_logits"], rtol=1e-4, atol=1e-3)


def _exact_gaussian(n: int, mean: torch.Tensor, var: torch.Tensor, seed: int) -> torch.Tensor:
    """Samples whose sample mean and (unbiased) covariance are exactly ``mean`` and ``diag(var)``."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (n - 1))).T
    return x * var.sqrt() + mean


def test_frechet_distance_of_two_gaussians_is_the_closed_form():
    d = 8
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.arange(d, dtype=torch.float64) / 4
    v1, v2 = torch.linspace(0.5, 2, d, dtype=torch.float64), torch.linspace(3, 1, d, dtype=torch.float64)
    a, b = _exact_gaussian(50, m1, v1, 0), _exact_gaussian(70, m2, v2, 1)
    closed = float(((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())  # commuting covariances
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(closed, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + 1) == pytest.approx(16.0, rel=1e-6)  # a shifted mean adds |shift|^2


def test_inception_score_bounds():
    assert inception_score(torch.zeros(20, 5)) == (pytest.approx(1.0), pytest.approx(0.0))  # one blurry class
    mean, std = inception_score(torch.eye(10) * 100, splits=1)  # ten confident, distinct classes
    assert mean == pytest.approx(10.0) and std == 0.0


def test_inception_score_is_repeatable():
    logits = torch.randn(30, 7, generator=torch.Generator().manual_seed(4)) * 3
    assert inception_score(logits, seed=5) == inception_score(logits, seed=5)


def test_too_few_items_is_a_clear_error():
    with pytest.raises(GenerationEvalError, match="at least 2 generated"):
        frechet_distance(torch.randn(1, 4), torch.randn(5, 4))


def test_missing_weight_file_names_the_file_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "pt_inception.pth"
    ex = Extractors(EvalConfig(device="cpu", inception_weights=str(missing)))
    with pytest.raises(WeightsError) as err:
        _ = ex.inception
    assert str(missing) in str(err.value) and "torch-fidelity/releases" in str(err.value)


def test_published_weight_files_load_by_key(tmp_path):
    """A state dict saved as the releases are (PANNs: under "model", with its front-end buffers) loads
    strictly and gives the same features; a file of another network is refused by name."""
    ref = fill(Cnn14())
    state = {"model": {**ref.state_dict(), "spectrogram_extractor.stft.conv_real.weight": torch.zeros(1),
                       "logmel_extractor.melW": torch.zeros(1)}}
    torch.save(state, tmp_path / "Cnn14_16k.pth")
    ex = Extractors(EvalConfig(device="cpu", panns_weights=str(tmp_path / "Cnn14_16k.pth")))
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(ex.panns(wave)[0], ref(wave)[0])
    assert ex.notes == []
    ex = Extractors(EvalConfig(device="cpu", inception_weights=str(tmp_path / "Cnn14_16k.pth")))
    with pytest.raises(WeightsError, match="not FID Inception-v3 weights; missing keys: Conv2d_1a_3x3"):
        _ = ex.inception


@pytest.fixture(scope="module")
def tiny_extractors():
    torch.set_num_threads(1)
    return Extractors(load_config("tiny").eval, progress=False)


def test_score_images_and_audio_on_files(tmp_path, tiny_extractors):
    images = [media_factory.image(tmp_path / f"i{i}.png", size=(40 + 8 * i, 32)) for i in range(4)]
    result = score("image", [Item(p) for p in images[:2]], [Item(p) for p in images[2:]], tiny_extractors)
    assert set(result["metrics"]) == {"FID", "IS", "IS_std"} and result["metrics"]["FID"] > 0
    assert any("random weights" in n for n in result["notes"])
    same = score("image", [Item(p) for p in images], [Item(p) for p in images], tiny_extractors)
    assert same["metrics"]["FID"] == pytest.approx(0.0, abs=1e-4)  # 4 items in 2048-d: rank-deficient
    sounds = [media_factory.audio(tmp_path / f"a{i}.wav", seconds=1.0 + i / 4) for i in range(3)]
    result = score("audio", [Item(p) for p in sounds], [Item(p) for p in sounds[::-1]], tiny_extractors)
    assert result["metrics"]["FD"] == pytest.approx(0.0, abs=1e-3) and result["metrics"]["IS"] >= 1.0


def test_eval_generation_cli_scores_videos_with_clipsim(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "ref").mkdir()
    for i in range(3):
        media_factory.video(tmp_path / "gen" / f"v{i}.mp4", frames=6 + i)
        media_factory.video(tmp_path / "ref" / f"r{i}.mp4", frames=8, size=(64, 64))
    manifest = tmp_path / "gen.jsonl"
    manifest.write_text("".join(json.dumps({"file": f"gen/v{i}.mp4", "prompt": f"a moving bar {i}"}) + "\n"
                                for i in range(3)))
    r = run_cli("eval", "generation", "--kind", "video", "-g", str(manifest), "-r", str(tmp_path / "ref"),
                "--config", "tiny")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["items"] == 3 and out["reference_items"] == 3
    assert set(out["metrics"]) == {"FID", "CLIPSIM"} and -1 <= out["metrics"]["CLIPSIM"] <= 1
    r = run_cli("eval", "generation", "--kind", "video", "-g", str(tmp_path / "gen"), "-r", str(tmp_path / "ref"),
                "-c", "tiny")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CLIPSIM needs each generated video's prompt" in r.stderr
    r = run_cli("eval", "generation", "--kind", "image", "-g", str(tmp_path / "gen"), "-r", str(tmp_path / "ref"))
    assert r.returncode == 2 and "no image files" in r.stderr and str(tmp_path / "gen") in r.stderr
    # Without --config the published networks are used: offline, a missing file is named, with its URL.
    r = run_cli("eval", "generation", "--kind", "video", "-g", str(manifest), "-r", str(tmp_path / "ref"),
                "--set", f"eval.inception_weights={tmp_path / 'inception.pth'}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert str(tmp_path / "inception.pth") in r.stderr and "weights-inception-2015-12-05-6726825d.pth" in r.stderr
