"""The tiny generators' training recipe (``modaverse zoo train``), its judges and the round trip.

Runs here are a few steps on narrow networks: they prove the recipe's wiring (stages, the VAE's
scaling factor, exact resume, a diffusers folder the real plug-in loads), not what training learns;
docs/zoo.md gives the shipped generators' round-trip figures (``benchmarks/roundtrip.py``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from modaverse.data import samples
from modaverse.evaluation import judges
from modaverse.evaluation.roundtrip import vocabulary

from .conftest import one_line_error, run_cli

#: Narrow networks and two steps per stage: seconds on a CPU.
SMALL = ["--set", "zoo_train.vae_channels=[8,16,16]", "--set", "zoo_train.unet_channels=[8,16]",
         "--set", "zoo_train.unet_layers=1", "--set", "zoo_train.text_hidden=16", "--set", "zoo_train.batch_size=4",
         "--set", "zoo_train.save_every=1", "--set", "zoo_train.steps.text-to-image={vae: 2, unet: 2}"]


def test_judges_read_real_samples_of_the_world():
    """Each judge must be right on real samples before its verdict on a render means anything."""
    n = 60
    assert np.mean([judges.colour(s.array) == s.content["colour"]
                    for s in (samples.image(1, i, 32, pair_share=0.0) for i in range(n))]) >= 0.98
    assert np.mean([judges.objects(s.array) == [(s.content["colour"], s.content["shape"])]
                    for s in (samples.image(1, i, 32, pair_share=0.0) for i in range(n))]) >= 0.95
    assert np.mean([judges.direction(s.array) == s.content["motion"]
                    for s in (samples.video(2, i, 32, 8) for i in range(40))]) >= 0.95
    assert np.mean([judges.sound(s.array) == s.content["sound"]
                    for s in (samples.audio(3, i, 1.0) for i in range(40))]) >= 0.95
    edits = [samples.edit(4, i, 32) for i in range(40)]
    assert max(judges.kept(s.source, s.array) for s in edits) < judges.KEPT_LEVELS  # only the object changed


def test_judges_refuse_what_is_not_there():
    """Noise, a blank picture and silence are no colour, no shape, no sound: the judges cannot be fooled
    into a default answer."""
    rng = np.random.default_rng(0)
    blank = np.full((32, 32, 3), 240, np.uint8)
    assert judges.colour(blank) is None and judges.objects(blank) == []
    noisy = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert len(judges.colours(noisy)) > 1  # noise shows every colour at once: never one clean answer
    assert judges.sound(np.zeros(16000, np.float32)) is None
    assert judges.sound(rng.standard_normal(16000).astype(np.float32) / 3) == "noise"
    still = np.repeat(samples.image(5, 0, 32, pair_share=0.0).array[None], 8, axis=0)
    assert judges.direction(still) is None
    edit = samples.edit(6, 0, 32)
    assert judges.kept(edit.source, np.full_like(edit.source, 128)) > judges.KEPT_LEVELS


def test_samples_are_pure_functions_of_seed_and_index():
    a, b = samples.image(9, 3, 32), samples.image(9, 3, 32)
    assert a.caption == b.caption and np.array_equal(a.array, b.array)
    assert not np.array_equal(a.array, samples.image(9, 4, 32).array)
    e = samples.edit(9, 3, 32)
    assert e.source.shape == e.array.shape == (32, 32, 3) and e.content["before"] != {
        "colour": e.content["colour"], "shape": e.content["shape"]}


@pytest.mark.parametrize("args, needles", [
    (["zoo", "train", "text-to-smell"], ["text-to-smell", "text-to-image"]),
    (["zoo", "train", "text-to-image", "--set", "zoo_train.steps.text-to-image={vocoder: 5}"], ["vocoder", "vae, unet"]),
    (["zoo", "train", "text-to-image", "--set", "zoo_train.size=36"], ["zoo_train.size 36"]),
    (["zoo", "train", "text-to-image", "--set", "zoo_train.zero_terminal_snr=true"],
     ["zero_terminal_snr needs prediction_type v_prediction", "text-to-image predicts the noise"]),
    (["zoo", "train", "text-to-video", "--set", "zoo_train.zero_terminal_snr=true", "--set",
      "zoo_train.prediction_type=epsilon"], ["zero_terminal_snr needs prediction_type v_prediction"]),
])
def test_zoo_train_refuses_bad_input_in_one_line(args, needles, tmp_path):
    one_line_error(run_cli(*args, "-o", tmp_path / "run"), *needles)
    assert not (tmp_path / "run").exists()


def _render(capability: str, prompt: str, params: dict, out, *overrides: str, inputs=()) -> list:
    """One render through the zoo the CLI's ``render`` uses, in this process (the CLI itself is tested in
    test_zoo): a diffusers import paid once, not per render."""
    from modaverse.config import load_config
    from model_zoo.zoo import Zoo

    return Zoo.from_config(load_config("tiny", list(overrides))).render(capability, prompt, params, out, list(inputs))


def test_zoo_train_resumes_exactly_and_the_real_plugin_renders_its_folder(tmp_path):
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    r = run_cli("zoo", "train", "text-to-image", "-o", a, *SMALL)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[0])
    assert summary["steps"] == 4 and "noise_mse" in summary["last"]
    assert "scaling factor" in r.stderr
    index = json.loads((a / "final" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    factor = json.loads((a / "final" / "vae" / "config.json").read_text())["scaling_factor"]
    assert factor != 0.18215  # measured on this VAE's latents, not SD's constant
    # a copy of the run cut back to a checkpoint inside the UNet stage (optimizer and EMA restored), then to
    # the one at the end of the VAE stage (the UNet's optimizer starts fresh, the VAE's scaling factor is
    # kept): each resumes to the same weights as the uninterrupted run
    assert sorted(p.name for p in a.glob("step-*")) == ["step-000002", "step-000003"]
    shutil.copytree(a, b)
    for cut in ("step-000003", "step-000002"):
        shutil.rmtree(b / "final")
        for later in b.glob("step-*"):
            if later.name > cut:
                shutil.rmtree(later)
        (b / "latest").write_text(cut + "\n")
        r = run_cli("zoo", "train", "text-to-image", "-o", b, "--resume", *SMALL)
        assert r.returncode == 0 and "resumed from" in r.stderr, r.stderr
        for part in ("unet", "vae"):
            ta = load_file(str(a / "final" / part / "diffusion_pytorch_model.safetensors"))
            tb = load_file(str(b / "final" / part / "diffusion_pytorch_model.safetensors"))
            assert all(torch.equal(ta[k], tb[k]) for k in ta), (cut, part)
        assert json.loads((b / "final" / "vae" / "config.json").read_text())["scaling_factor"] == factor
    # a finished run is not overwritten by accident
    one_line_error(run_cli("zoo", "train", "text-to-image", "-o", a, *SMALL), "--overwrite")
    # the folder is a diffusers checkpoint: the real stable-diffusion plug-in loads and renders it
    png, = _render("text-to-image", "a red circle", {"steps": 2, "width": 32, "height": 32}, tmp_path / "render",
                   "zoo.text-to-image.plugin=stable-diffusion", f"zoo.text-to-image.model={a / 'final'}")
    from PIL import Image

    assert Image.open(png).size == (32, 32)


def test_eval_roundtrip_reports_renders_beside_real_samples(tmp_path):
    """The random tiny generators render noise: the judges say so, and say they read real samples right."""
    r = run_cli("eval", "roundtrip", "--capability", "text-to-image", "--capability", "text-to-audio",
                "--samples", "1", "-o", tmp_path / "rt.json", "--set", "zoo=tiny")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "rt.json").read_text())
    image, audio = report["text-to-image"], report["text-to-audio"]
    assert image["renders"] == 12 and audio["renders"] == 4
    assert image["real_samples_judged"]["colour"] >= 0.95 and audio["real_samples_judged"]["sound"] >= 0.95
    assert image["renders_judged"]["shape"] <= 0.5  # noise is no shape
    # the second judge, the bound encoder, reads real samples right and noise as no particular shape either
    assert image["real_samples_encoder_judged"]["shape"] >= 0.95 and audio["real_samples_encoder_judged"]["sound"] >= 0.95
    assert image["renders_encoder_judged"]["shape"] <= 0.5
    assert set(image["per_caption"]) == {p for p, _ in vocabulary("text-to-image")}
    one_line_error(run_cli("eval", "roundtrip", "--capability", "text-to-smell"), "text-to-smell")


def test_video_editing_and_audio_train_and_their_real_plugins_render(tmp_path):
    """Video and editing start from a trained text-to-image pipeline; each result is a diffusers folder
    that the real plug-in (text-to-video-ms, instruct-pix2pix, audioldm) loads and renders."""
    root = tmp_path / "zoo"
    tiny = [*SMALL, "--set", f"zoo_train.output_dir={root}", "--set", "zoo_train.video_batch_size=2",
            "--set", "zoo_train.vocoder_channels=16", "--set", "zoo_train.audio_batch_size=4",
            "--set", "zoo_train.vocoder_batch_size=2", "--max-steps", "2"]
    one_line_error(run_cli("zoo", "train", "text-to-video", *tiny), "text-to-image", "first")
    one_line_error(run_cli("zoo", "train", "text-to-image", "text-to-video", "-o", tmp_path / "x", *tiny),
                   "--output-dir", "several")
    # one command trains all four, text-to-image first though named last; they learn the velocity on a
    # schedule whose last step is pure noise
    r = run_cli("zoo", "train", "text-to-video", "image-editing", "text-to-audio", "text-to-image", *tiny,
                "--set", "zoo_train.prediction_type=v_prediction", "--set", "zoo_train.zero_terminal_snr=true")
    assert r.returncode == 0, r.stderr
    trained = [json.loads(line)["capability"] for line in r.stdout.splitlines()]
    assert trained == ["text-to-image", "text-to-video", "image-editing", "text-to-audio"]
    assert all((root / c / "final" / "model_index.json").is_file() for c in trained)
    scheduler = json.loads((root / "text-to-video" / "final" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"  # the saved scheduler tells the pipeline so
    assert scheduler["rescale_betas_zero_snr"] and scheduler["timestep_spacing"] == "trailing"
    assert "v_mse" in json.loads((root / "text-to-video" / "summary.json").read_text())["last"]
    # video's text encoder learned the captions first (its own copy: the image pipeline's is untouched)
    from safetensors.torch import load_file

    video_text, image_text = (load_file(root / c / "final" / "text_encoder" / "model.safetensors")
                              for c in ("text-to-video", "text-to-image"))
    assert not all(torch.equal(video_text[k], image_text[k]) for k in image_text)
    picture = tmp_path / "in.png"
    from PIL import Image

    from modaverse.config import load_config
    from modaverse.media import load_media

    Image.fromarray(samples.image(0, 0, 32, pair_share=0.0).array).save(picture)
    for capability, plugin, params, suffix in (
            ("text-to-video", "text-to-video-ms", {"frames": 4, "width": 32, "height": 32}, ".mp4"),
            ("image-editing", "instruct-pix2pix", {"width": 32, "height": 32}, ".png"),
            ("text-to-audio", "audioldm", {"duration": 1.28}, ".wav")):
        inputs = [load_media(picture, None, load_config("tiny").media)] if capability == "image-editing" else []
        files = _render(capability, "make it blue" if inputs else "a red circle moving", {"steps": 2, **params},
                        tmp_path / capability, f"zoo.{capability}.plugin={plugin}",
                        f"zoo.{capability}.model={root / capability / 'final'}", inputs=inputs)
        assert files[0].suffix == suffix and files[0].stat().st_size > 0
    import soundfile

    wave, rate = soundfile.read(str(next((tmp_path / "text-to-audio").glob("*.wav"))))
    assert rate == 16000 and len(wave) == 128 * 160  # 1.28 s: the vocoder's 160 samples per mel frame


def test_the_shipped_image_generator_draws_what_it_is_asked(tmp_path):
    """The offline profiles' text-to-image (configs/checkpoints/zoo/text-to-image, trained by zoo train)
    draws the world's shapes: the judges read back each colour and shape it was asked for."""
    from PIL import Image

    asked = [("red", "circle"), ("green", "triangle"), ("blue", "ring"), ("yellow", "triangle")]
    for colour, shape in asked:
        png, = _render("text-to-image", f"a {colour} {shape}, flat illustration", {"seed": 1}, tmp_path / colour)
        picture = np.asarray(Image.open(png).convert("RGB"))
        assert picture.shape == (32, 32, 3)
        assert judges.objects(picture) == [(colour, shape)], (colour, shape)


def test_the_shipped_video_generator_animates_what_it_is_asked(tmp_path):
    """The offline profiles' text-to-video (configs/checkpoints/zoo/text-to-video) moves the asked shape
    the asked way: the judges read back the colour and the direction of motion of each clip. Each pair shares
    its seed, so the caption decides the direction, not the noise (as it did before zero terminal SNR)."""
    from modaverse.evaluation.roundtrip import read_video

    for colour, shape, direction in [("blue", "circle", "left"), ("blue", "circle", "right"),
                                     ("green", "ring", "up"), ("green", "ring", "down")]:
        mp4, = _render("text-to-video", f"a {colour} {shape} moving {direction}", {"seed": 1},
                       tmp_path / f"{colour}-{direction}")
        frames = read_video(mp4)
        assert frames.shape == (8, 32, 32, 3)
        assert judges.colour(frames[4]) == colour and judges.direction(frames) == direction, (colour, direction)


def test_the_shipped_audio_generator_sounds_like_what_it_is_asked(tmp_path):
    """The offline profiles' text-to-audio (configs/checkpoints/zoo/text-to-audio: mel VAE, vocoder and UNet
    trained) renders the asked kind of sound: the judge reads back a hum, a beep, noise and a rising chirp."""
    import soundfile

    for prompt, kind in [("a low hum", "low"), ("a high beep", "high"), ("a burst of white noise", "noise"),
                         ("a rising chirp", "chirp")]:
        wav, = _render("text-to-audio", prompt, {"seed": 1}, tmp_path / kind)
        wave, rate = soundfile.read(str(wav))
        assert rate == 16000 and judges.sound(wave) == kind, (prompt, judges.sound(wave))


def test_the_vocoder_also_learns_tones_and_sweeps_across_the_band():
    """Half the vocoder's slices are sine waves at random pitches, steady or gliding: tonal (never noise to the
    judge), from the low end of the band to its top, so a chirp's passing pitches were all seen."""
    from modaverse.training.audio_generator import _sweeps

    waves = _sweeps(64, 20480, torch.Generator().manual_seed(0)).numpy()
    kinds = [judges.sound(w) for w in waves]
    freqs = np.fft.rfftfreq(judges.FRAME, 1 / 16000)
    starts = [freqs[np.argmax(judges.loud_power(w)[0])] for w in waves]
    assert "noise" not in kinds and {"low", "high", "chirp"} <= set(kinds)
    assert min(starts) < 200 and max(starts) > 2500


def test_each_capability_has_its_own_noise_schedule_and_a_setting_overrides_it():
    from modaverse.config import load_config

    z = load_config("tiny").zoo_train
    assert z.schedule("text-to-video") == {"prediction_type": "v_prediction", "zero_terminal_snr": True}
    assert z.schedule("text-to-image") == {"prediction_type": "epsilon", "zero_terminal_snr": False}
    z = load_config("tiny", ["zoo_train.prediction_type=epsilon"]).zoo_train
    assert z.schedule("text-to-video") == {"prediction_type": "epsilon", "zero_terminal_snr": False}
    z = load_config("tiny", ["zoo_train.prediction_type=v_prediction"]).zoo_train
    assert z.schedule("image-editing") == {"prediction_type": "v_prediction", "zero_terminal_snr": False}
