"""The console script, run as a user would: real subprocesses, real files."""

import numpy as np
import pytest
import torch

from modaverse.encoder import embfile

from . import media_factory as mf
from .conftest import IB, one_line_error, run_cli, run_on_terminal

REF = ["--encoder-config", IB / "config.json", "--weights", IB / "weights.safetensors"]


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0 and "embed" in r.stdout
    bare = run_cli()  # no arguments: the same help, not an error
    assert bare.returncode == 0 and bare.stdout == r.stdout and bare.stderr == ""
    from modaverse import __version__

    v = run_cli("--version")
    assert v.returncode == 0 and v.stdout.strip() == f"modaverse {__version__}"
    r = run_cli("embed", "--help")
    assert r.returncode == 0 and "--encoder-config" in r.stdout and "--modality" in r.stdout


def test_embed_reproduces_upstream_embeddings(tmp_path, expected):
    out = tmp_path / "out" / "emb.safetensors"
    files = [IB / "image_a.png", IB / "audio_16k.wav", IB / "video.mp4", IB / "image_b.jpg", IB / "imu.npy"]
    r = run_cli("embed", *files, *REF, "--output", out, "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert "embedded 5 file(s)" in r.stdout
    emb, names, mods, meta = embfile.read(out)
    assert names == [str(f) for f in files]
    assert mods == ["image", "audio", "video", "image", "imu"]
    ref = torch.cat([expected["vision.embedding"][:1], expected["audio16.embedding"], expected["video.embedding"],
                     expected["vision.embedding"][1:], expected["imu.embedding"]])
    torch.testing.assert_close(emb, ref, atol=1e-4, rtol=0)  # 1e-5 x largest magnitude (audio ~8)


def test_progress_bar_on_a_terminal(tmp_path):
    """Progress shows on a real pseudo-terminal (and stays out of pipes and logs)."""
    files = [mf.image(tmp_path / f"{i}.png") for i in range(3)]
    code, terminal, _ = run_on_terminal("embed", *files, "--output", tmp_path / "e.safetensors")
    assert code == 0
    assert "embed:" in terminal and "/3 [" in terminal
    r = run_cli("embed", *files, "--output", tmp_path / "e.safetensors", "--force")
    assert r.stderr == ""  # piped: no bar


def test_embed_with_config_and_modality(tmp_path, expected):
    out = tmp_path / "d.safetensors"
    fixture_shape = ["--set", "encoder.arch=imagebind_tiny", "--set", "encoder.tower_weights=null",  # upstream's sizes
                     "--set", "media.image_size=224", "--set", "media.video.size=224", "--set", "media.video.crops=3"]
    r = run_cli("embed", IB / "depth.npy", IB / "thermal.npy", "--config", "tiny", "--modality", "depth",
                "--weights", IB / "weights.safetensors", "--output", out, *fixture_shape)
    assert r.returncode == 0, r.stderr
    emb, _, mods, _ = embfile.read(out)
    assert mods == ["depth", "depth"]
    torch.testing.assert_close(emb[:1], expected["depth.embedding"], atol=1e-5, rtol=0)
    r = run_cli("inspect", out)
    assert r.returncode == 0 and "depth" in r.stdout and "cosine similarity" in r.stdout


def test_tiny_profile_runs_without_weights(tmp_path):
    out = tmp_path / "e.safetensors"
    r = run_cli("embed", mf.image(tmp_path / "a.png"), mf.audio(tmp_path / "a.flac"), "--output", out)
    assert r.returncode == 0, r.stderr
    assert embfile.read(out)[0].shape == (2, 64)  # the bound tiny encoder's embeddings


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "mislabelled", "unsupported"])
def test_bad_files_fail_in_one_line_and_keep_earlier_output(tmp_path, case):
    out = tmp_path / "emb.safetensors"
    assert run_cli("embed", IB / "image_a.png", "--output", out).returncode == 0
    before = out.read_bytes()
    bad = {
        "missing": tmp_path / "gone.wav",
        "empty": tmp_path / "empty.png",
        "truncated": mf.truncate(mf.video(tmp_path / "v.mp4"), tmp_path / "cut.mp4", 0.5),
        "mislabelled": tmp_path / "sound.jpg",
        "unsupported": tmp_path / "notes.docx",
    }[case]
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "mislabelled":
        bad.write_bytes(mf.audio(tmp_path / "a.wav").read_bytes())
    elif case == "unsupported":
        bad.write_bytes(b"PK")
    one_line_error(run_cli("embed", IB / "image_a.png", "--output", out), out, "already exists; pass --force")
    r = run_cli("embed", IB / "image_a.png", bad, "--output", out, "--force")
    reason = {"missing": "no such file", "empty": "file is empty", "truncated": "",
              "mislabelled": "mislabelled", "unsupported": "unsupported extension"}[case]
    one_line_error(r, bad, reason)
    assert out.read_bytes() == before  # nothing already written is lost


def test_weights_that_do_not_match_list_keys(tmp_path):
    r = run_cli("embed", IB / "image_a.png", "--config", "tiny", "--set", "encoder.kwargs.out_embed_dim=16",
                "--weights", IB / "weights.safetensors", "--output", tmp_path / "e.safetensors")
    one_line_error(r, "weights do not match the encoder config", "shape mismatch", "modality_heads.audio.2.weight")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(IB / "weights.safetensors"))
    sd.pop("modality_trunks.imu.blocks.0.norm_1.bias")
    save_file(sd, str(tmp_path / "w.safetensors"))
    r = run_cli("embed", IB / "image_a.png", "--encoder-config", IB / "config.json",
                "--weights", tmp_path / "w.safetensors", "--output", tmp_path / "e.safetensors")
    one_line_error(r, "missing keys: modality_trunks.imu.blocks.0.norm_1.bias")


def test_config_and_argument_errors(tmp_path):
    out = ["--output", tmp_path / "e.safetensors"]
    one_line_error(run_cli("embed", IB / "image_a.png", "--set", "encoder.batchsize=2", *out),
                    "encoder.batchsize: unknown key")
    one_line_error(run_cli("embed", IB / "image_a.png", "--config", tmp_path / "no.yaml", *out), "no such config")
    one_line_error(run_cli("embed", IB / "image_a.png", "--output", tmp_path / "e.npy"), "must be a .safetensors")
    one_line_error(run_cli("embed", IB / "depth.npy", *out), "fits depth and thermal")
    bad = tmp_path / "enc.json"
    bad.write_text('{"vision_embed_dims": 64}')
    one_line_error(run_cli("embed", IB / "image_a.png", "--encoder-config", bad, "--weights", IB / "weights.safetensors", *out),
                    "vision_embed_dims: unknown ImageBindModel argument")
    one_line_error(run_cli("embed", IB / "image_a.png", "--encoder-config", IB / "config.json", *out), "needs --weights")
    one_line_error(run_cli("embed", IB / "image_a.png", "--set", "encoder.modalities=[audio]", *out),
                    "built without the image tower")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4), np.float32))
    one_line_error(run_cli("embed", tmp_path / "x.npy", *out), "cannot tell the modality")


def test_configs_and_archs_commands():
    r = run_cli("configs")
    assert r.returncode == 0 and "tiny" in r.stdout.split() and "modaverse-7b" in r.stdout.split()
    profiles, launchers = r.stdout.split("\n\n")
    rows = {line.split()[0]: line for line in profiles.splitlines()}
    assert "SmolLM2-135M-Instruct" in rows["smol"] and "paper scale" in rows["modaverse-7b"]  # each says what it is
    launch = {line.split()[0]: line for line in launchers.splitlines()[1:]}  # and each launcher config what ran it
    assert "GPU-only, untested" in launch["configs/accelerate/zero2.yaml"]
    assert "run in CI" in launch["configs/accelerate/fsdp.yaml"]
    r = run_cli("configs", "--config", "tiny", "--set", "encoder.batch_size=5")
    assert r.returncode == 0 and "batch_size: 5" in r.stdout
    r = run_cli("archs")
    assert r.returncode == 0 and "imagebind_huge" in r.stdout


def test_usage_errors_are_one_line(tmp_path):
    one_line_error(run_cli("embed", IB / "image_a.png", "--batch-size", "0", "-o", tmp_path / "e.safetensors"),
                    "--batch-size: 0 is not a positive number")
    one_line_error(run_cli("embed", IB / "image_a.png"), "required: --output")
    one_line_error(run_cli("frobnicate"), "invalid choice: 'frobnicate'")
    one_line_error(run_cli("embed", IB / "image_a.png", "--device", "gpu", "-o", tmp_path / "e.safetensors"),
                    "--device: unknown device 'gpu'")
    (tmp_path / "dir.safetensors").mkdir()
    one_line_error(run_cli("embed", IB / "image_a.png", "-o", tmp_path / "dir.safetensors"), "is a directory")
    one_line_error(run_cli("inspect", IB / "image_a.png"), "not an embeddings file")
    one_line_error(run_cli("render", "image-editing", "make it snowy", "-o", tmp_path / "r"), "give it with -i FILE")


def _help_texts(parser, prefix="modaverse"):
    """Every (sub)command's --help text, as a user would print it."""
    import argparse

    yield prefix, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _help_texts(sub, f"{prefix} {name}")


def test_help_texts_name_only_configs_that_exist():
    """A config named in any --help must exist (one named modaverse-7b-official, which never did)."""
    import re

    from modaverse.cli.main import build_parser
    from modaverse.config import list_configs

    configs = list_configs()
    family = "|".join(sorted({re.escape(c.split("-")[0]) for c in configs}, key=len, reverse=True))
    # hyphenated names that start like a config's (bare words such as "tiny" are configs or prose)
    pattern = re.compile(rf"(?<![\w/.-])((?:{family})(?:-[\w]+)+)(?![\w/-])")
    seen = 0
    for command, text in _help_texts(build_parser()):
        for name in pattern.findall(" ".join(text.split())):
            seen += 1
            assert name in configs, f"`{command} --help` names config {name!r}"
    assert seen > 0  # the walk does reach help texts that name configs


@pytest.mark.parametrize("command", [["train"], ["bind"], ["zoo", "train", "text-to-image"]])
def test_resumable_runs_refuse_resume_with_overwrite_before_any_work(command, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("an earlier run's file")
    one_line_error(run_cli(*command, "-o", run, "--resume", "--overwrite"), "--resume and --overwrite")
    assert [p.name for p in run.iterdir()] == ["keep.txt"]
    assert "--resume" in run_cli(*command, "--help").stdout
