"""The model zoo on the tiny profile: every plug-in renders, reloads from disk, and fails alone."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from modaverse.config import load_config
from modaverse.core.errors import ConfigError, ModaverseError
from modaverse.media import load_media
from modaverse.meta.schema import validate
from model_zoo.registry import load_plugin
from model_zoo.zoo import Zoo

from .conftest import IB, one_line_error, run_cli

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def zoo():
    """The random tiny kit (preset `tiny`): these tests are about files and formats, and it is the fastest."""
    return Zoo.from_config(load_config("tiny", ["zoo=tiny"]))


@pytest.fixture(scope="module")
def image_input():
    return [load_media(IB / "image_a.png")]


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _frames(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return stream.codec_context.name, [f.to_ndarray(format="rgb24") for f in c.decode(stream)]


def test_image_png_with_sidecar_and_seed_reproducibility(zoo, tmp_path):
    a = zoo.render("text-to-image", "a red cube", {"seed": 5}, tmp_path)
    b = zoo.render("text-to-image", "a red cube", {"seed": 5}, tmp_path)
    c = zoo.render("text-to-image", "a red cube", {"seed": 6}, tmp_path)
    assert len({a[0], b[0], c[0]}) == 3  # generated names, nothing overwritten
    assert Image.open(a[0]).size == (64, 64)
    assert np.array_equal(_pixels(a[0]), _pixels(b[0])) and not np.array_equal(_pixels(a[0]), _pixels(c[0]))
    side = json.loads(a[0].with_suffix(".png.json").read_text())
    assert side["prompt"] == "a red cube" and side["seed"] == 5 and side["plugin"] == "tiny-stable-diffusion"
    assert side["params"]["steps"] == 2 and side["seconds"] >= 0 and side["file"] == a[0].name


@pytest.mark.parametrize("fmt, codec", [("mp4", "h264"), ("webm", "vp9")])
def test_video_h264_mp4_or_vp9_webm(zoo, tmp_path, fmt, codec):
    (path,) = zoo.render("text-to-video", "waves", {"seed": 1, "format": fmt, "frames": 6}, tmp_path)
    assert path.suffix == f".{fmt}"
    name, frames = _frames(path)
    assert name == codec and len(frames) == 6 and frames[0].shape == (64, 64, 3)


def test_audio_wav_normalised_pcm_or_float(zoo, tmp_path):
    (pcm,) = zoo.render("text-to-audio", "rain", {"seed": 1}, tmp_path)
    (flt,) = zoo.render("text-to-audio", "rain", {"seed": 1, "format": "wav-float", "duration": 2.0}, tmp_path)
    data, rate = sf.read(pcm)
    assert rate == 16000 and sf.info(pcm).subtype == "PCM_16" and len(data) == 16000
    assert 0.98 < np.abs(data).max() <= 0.99 + 1e-4  # peak-normalised
    assert sf.info(flt).subtype == "FLOAT" and sf.info(flt).frames == 32000


def test_image_editing_uses_the_turns_image(zoo, tmp_path, image_input):
    (path,) = zoo.render("image-editing", "make it snowy", {"seed": 1}, tmp_path / "a", image_input)
    (again,) = zoo.render("image-editing", "make it snowy", {"seed": 1}, tmp_path / "b", image_input)
    other = [load_media(IB / "image_b.jpg")]
    (edited_other,) = zoo.render("image-editing", "make it snowy", {"seed": 1}, tmp_path / "c", other)
    assert Image.open(path).size == (64, 64)
    assert np.array_equal(_pixels(path), _pixels(again))  # same image, prompt and seed: same output
    assert np.abs(_pixels(path) - _pixels(edited_other)).max() > 8  # only the input changed, and the output did
    fresh = Zoo.from_config(load_config("tiny"))
    with pytest.raises(ModaverseError, match="image-editing edits an image, but this turn has no image input"):
        fresh.render("image-editing", "make it snowy", {}, tmp_path)
    assert not fresh.generators["image-editing"].loaded  # refused before its weights load


@pytest.mark.parametrize("plugin, capability, params", [
    ("stable-diffusion", "text-to-image", {}),
    ("text-to-video-ms", "text-to-video", {"frames": 3}),
    ("audioldm", "text-to-audio", {}),
    ("audioldm2", "text-to-audio", {}),
    ("instruct-pix2pix", "image-editing", {}),
])
def test_each_plugin_reloads_from_a_save_pretrained_folder(tmp_path, image_input, plugin, capability, params):
    """The real loading path: from_pretrained on a saved folder gives the same output as the built one."""
    base = load_config("tiny", ["zoo=tiny", f"zoo.{capability}.plugin=tiny-{plugin}"])
    built = Zoo.from_config(base)
    gen = built.acquire(capability)
    gen.pipe.save_pretrained(tmp_path / "saved")
    swapped = load_config("tiny", ["zoo=tiny", f"zoo.{capability}.plugin={plugin}",
                                   f"zoo.{capability}.model={tmp_path / 'saved'}"])
    reloaded = Zoo.from_config(swapped)
    assert reloaded.status()[list(reloaded.capabilities).index(capability)]["model"] == str(tmp_path / "saved")
    a = built.render(capability, "a cat", {"seed": 3, **params}, tmp_path / "a", image_input)[0]
    b = reloaded.render(capability, "a cat", {"seed": 3, **params}, tmp_path / "b", image_input)[0]
    if a.suffix == ".png":
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 1
    elif a.suffix == ".mp4":
        assert np.abs(np.int16(_frames(a)[1]) - np.int16(_frames(b)[1])).max() <= 2
    else:
        np.testing.assert_allclose(sf.read(a)[0], sf.read(b)[0], atol=1e-3)


def test_swapping_through_yaml(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "zoo:\n  text-to-image:\n    plugin: stable-diffusion\n    model: ./weights/sd\n"
        "    defaults: {steps: 3}\n")
    config = load_config(tmp_path / "mine.yaml")
    zoo = Zoo.from_config(config)
    assert zoo.capabilities == ("text-to-image",)
    with pytest.raises(ModaverseError, match=r"zoo.text-to-image.model .*weights/sd: no such folder"):
        zoo.render("text-to-image", "x", {}, tmp_path)


def test_lazy_loading_and_lru_limits():
    zoo = Zoo.from_config(load_config("tiny"))
    assert not any(r["loaded"] for r in zoo.status())  # nothing loads at start-up
    zoo.acquire("text-to-image")
    zoo.acquire("text-to-audio")
    assert [r["capability"] for r in zoo.status() if r["loaded"]] == ["text-to-audio"]  # LRU of one
    two = Zoo.from_config(load_config("tiny", ["render.max_resident=2"]))
    for cap in ("text-to-image", "text-to-audio", "text-to-image", "text-to-video"):
        two.acquire(cap)
    assert {r["capability"] for r in two.status() if r["loaded"]} == {"text-to-image", "text-to-video"}
    tight = Zoo.from_config(load_config("tiny", ["render.max_resident=4", "render.memory_budget_gb=0.0001"]))
    tight.acquire("text-to-image")
    tight.acquire("text-to-audio")  # the first one (over 0.1 MB) has to go
    assert [r["capability"] for r in tight.status() if r["loaded"]] == ["text-to-audio"]


def test_parameter_and_config_errors(zoo, tmp_path):
    for params, msg in [({"frames": 3}, "text-to-image does not take 'frames'"),
                        ({"steps": 0}, "text-to-image: steps: Input should be greater than or equal to 1"),
                        ({"width": 100}, "width: Input should be a multiple of 8")]:
        with pytest.raises(ModaverseError, match=msg):
            zoo.render("text-to-image", "x", params, tmp_path)
    with pytest.raises(ModaverseError, match="no generator is configured for 'text-to-3d'"):
        zoo.render("text-to-3d", "x", {}, tmp_path)
    with pytest.raises(ConfigError, match="zoo.text-to-image.plugin: unknown plug-in 'dall-e'"):
        Zoo.from_config(load_config("tiny", ["zoo.text-to-image.plugin=dall-e"]))
    with pytest.raises(ConfigError, match="zoo.text-to-video.defaults: text-to-video: fps: invalid value 500"):
        Zoo.from_config(load_config("tiny", ["zoo.text-to-video.defaults.fps=500"]))
    with pytest.raises(ConfigError, match="zoo.text-to-image.scheduler"):
        Zoo.from_config(load_config("tiny", ["zoo.text-to-image.scheduler=NoSuchScheduler"]))
    swapped = Zoo.from_config(load_config("tiny", ["zoo.text-to-image.scheduler=DPMSolverMultistepScheduler"]))
    assert type(swapped.acquire("text-to-image").pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert not list(tmp_path.iterdir())


def test_a_failing_generator_does_not_stop_the_others(tmp_path):
    zoo = Zoo.from_config(load_config("tiny", [f"zoo.text-to-audio.model={tmp_path / 'missing'}",
                                                "zoo.text-to-audio.plugin=audioldm"]))
    caps = ("text-to-image", "text-to-video", "text-to-audio", "image-editing")
    doc = validate({"text": "", "invocations": [
        {"capability": "text-to-audio", "prompt": "rain"},
        {"capability": "text-to-image", "prompt": "a cat"},
        {"capability": "image-editing", "prompt": "snow"},  # no image in this turn
        {"capability": "text-to-video", "prompt": "waves"},
    ]}, caps)
    results = zoo.render_invocations(doc.invocations, tmp_path / "out")
    assert [bool(r.error) for r in results] == [True, False, True, False]
    assert "missing: no such folder" in results[0].error
    assert [p.suffix for r in results for p in r.files] == [".png", ".mp4"]
    assert all(p.exists() for r in results for p in r.files)


def test_the_pipeline_renders_a_turns_invocations(tiny_pipe, tmp_path):
    rendered = 0
    for seed in range(40):
        turn = tiny_pipe("Make something", temperature=1.0, seed=seed, max_new_tokens=96, output_dir=tmp_path / str(seed))
        assert turn.errors == [] and len(turn.outputs) == len(turn.invocations)  # one file per tiny invocation
        rendered += len(turn.outputs)
        if rendered >= 2:
            break
    assert rendered >= 2
    assert all(p.exists() and p.with_suffix(p.suffix + ".json").exists() for p in turn.outputs)


def test_entry_point_plugin_from_an_installed_package(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(PLUGIN_PKG)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tmp_path / "echo.yaml").write_text("zoo:\n  text-to-text:\n    plugin: echo-text\n    model: none\n"
                                        "    defaults: {repeat: 2}\n")
    env = {"PYTHONPATH": str(site)}
    r = run_cli("zoo", "list", "--config", tmp_path / "echo.yaml", env=env)
    assert r.returncode == 0, r.stderr
    assert "echo-text (modaverse_echo_plugin:EchoText)" in r.stdout and "| text-to-text | echo-text |" in r.stdout
    r = run_cli("render", "text-to-text", "hello ", "--config", tmp_path / "echo.yaml", "-o", tmp_path / "o",
                "-p", "seed=4", env=env)
    assert r.returncode == 0, r.stderr
    out = Path(r.stdout.strip())
    assert out.read_text() == "hello hello " and json.loads(Path(f"{out}.json").read_text())["seed"] == 4
    # without the package installed, the same config fails in one line
    one_line_error(run_cli("zoo", "list", "--config", tmp_path / "echo.yaml"), "unknown plug-in 'echo-text'")
    # a registered class without the generator's methods is refused by name, before anything loads
    (tmp_path / "half.yaml").write_text("zoo:\n  text-to-text:\n    plugin: half-a-generator\n    model: none\n")
    one_line_error(run_cli("zoo", "list", "--config", tmp_path / "half.yaml", env=env),
                    "plug-in 'half-a-generator' (modaverse_echo_plugin:HalfAGenerator) is not a generator: it lacks "
                    "load, render, unload, memory_bytes")


def test_render_command_and_bad_parameters(tmp_path):
    r = run_cli("render", "text-to-image", "a tree", "-o", tmp_path, "-p", "seed=9", "-p", "steps=3")
    assert r.returncode == 0, r.stderr
    png = Path(r.stdout.strip())
    assert png.parent == tmp_path and json.loads(Path(f"{png}.json").read_text())["params"]["steps"] == 3
    one_line_error(run_cli("render", "text-to-image", "a tree", "-p", "steps=1000", "-o", tmp_path / "x"),
                    "steps: Input should be less than or equal to 150")
    one_line_error(run_cli("render", "text-to-3d", "a tree", "-o", tmp_path / "x"), "no generator is configured")
    one_line_error(run_cli("render", "text-to-image", "a tree", "-p", "steps", "-o", tmp_path / "x"),
                    "expected KEY=VALUE")
    one_line_error(run_cli("render", "text-to-image", "a tree", "--set", f"zoo.text-to-image.model={tmp_path / 'no'}",
                            "--set", "zoo.text-to-image.plugin=stable-diffusion", "-o", tmp_path / "x"), "no: no such folder")
    r = run_cli("render", "text-to-video", "waves", "--set", "zoo.text-to-video.defaults.format=webm", "-o", tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith(".webm"), r.stderr
    assert not (tmp_path / "x").exists()


def test_load_plugin_finds_builtins_and_the_tiny_kit_and_refuses_unknown_names():
    assert load_plugin("audioldm").name == "audioldm"
    assert load_plugin("tiny-audioldm").name == "tiny-audioldm"  # an entry point of this package
    with pytest.raises(ConfigError, match="unknown plug-in 'nope'; known: audioldm, audioldm2, instruct-pix2pix"):
        load_plugin("nope")


def test_zoo_presets_by_name_path_and_set(tmp_path):
    official = load_config("modaverse-7b")
    assert official.zoo["text-to-audio"].model == "cvssp/audioldm-l-full"
    assert official.zoo["text-to-video"].defaults["fps"] == 10
    sdxl = load_config("tiny", ["zoo=sdxl", "zoo.text-to-image.dtype=float32"])
    assert sdxl.zoo["text-to-audio"].plugin == "audioldm2" and sdxl.zoo["text-to-image"].dtype == "float32"
    (tmp_path / "sd").mkdir()
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mine.yaml").write_text("text-to-image: {plugin: stable-diffusion, model: ../sd}\n")
    (tmp_path / "cfg.yaml").write_text("zoo: presets/mine.yaml\n")
    assert load_config(tmp_path / "cfg.yaml").zoo["text-to-image"].model == str(tmp_path / "sd")
    with pytest.raises(ConfigError, match=r"--set zoo=nope: zoo: 'nope' is neither a zoo preset \(official, sdxl"):
        load_config("tiny", ["zoo=nope"])


def test_sdxl_checkpoints_load_through_the_same_plugin(tmp_path):
    """A saved SDXL folder (two text encoders, text_time conditioning) is picked up by AutoPipeline."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    import model_zoo.tiny as tiny

    torch.manual_seed(0)
    tok = tiny.tokenizer()
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=2, projection_dim=32, max_position_embeddings=77,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=2)
    StableDiffusionXLPipeline(vae=tiny.vae(), text_encoder=CLIPTextModel(text), text_encoder_2=CLIPTextModelWithProjection(text),
                              tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=tiny.scheduler()
                              ).save_pretrained(tmp_path / "sdxl")
    zoo = Zoo.from_config(load_config("tiny", ["zoo=tiny", f"zoo.text-to-image.model={tmp_path / 'sdxl'}",
                                               "zoo.text-to-image.plugin=stable-diffusion"]))
    (png,) = zoo.render("text-to-image", "a lighthouse", {"seed": 2}, tmp_path / "out")
    assert type(zoo.generators["text-to-image"].pipe).__name__ == "StableDiffusionXLPipeline"
    assert Image.open(png).size == (64, 64)


def test_the_frame_aware_video_unet_knows_frame_order_and_loads_as_itself(tmp_path):
    """ModelScope's UNet answers a clip played backwards with its answer played backwards (it cannot tell
    first from last); the frame-aware one does not, and a TextToVideoSDPipeline folder brings it back."""
    import torch
    from diffusers import TextToVideoSDPipeline

    from model_zoo import tiny
    from model_zoo.video_unet import FrameAwareUNet3D

    torch.manual_seed(0)
    plain = tiny.unet3d()
    aware = FrameAwareUNet3D.from_config(plain.config)
    aware.load_state_dict(plain.state_dict())  # the same weights: only the frame positions differ
    clip, text = torch.randn(1, 4, 4, 16, 16), torch.randn(1, 5, 32)

    def backwards_gap(unet) -> float:
        with torch.no_grad():
            return float((unet(clip, 10, text).sample - unet(clip.flip(2), 10, text).sample.flip(2)).abs().max())

    assert backwards_gap(plain) < 1e-5 and backwards_gap(aware) > 1e-2
    tok = tiny.tokenizer()
    TextToVideoSDPipeline(vae=tiny.vae(), text_encoder=tiny.clip_text(tok), tokenizer=tok, unet=aware,
                          scheduler=tiny.scheduler()).save_pretrained(tmp_path)
    loaded = TextToVideoSDPipeline.from_pretrained(tmp_path).unet
    assert type(loaded) is FrameAwareUNet3D
    with torch.no_grad():
        assert torch.equal(loaded(clip, 10, text).sample, aware(clip, 10, text).sample)
