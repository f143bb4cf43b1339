"""Config validation: errors name the file (or --set) and the dotted key."""

from pathlib import Path

import pytest

from modaverse.config import launch_configs, list_configs, load_config
from modaverse.core.errors import ConfigError
from modaverse.encoder.imagebind.config import ImageBindConfig


def test_packaged_configs_validate():
    assert {"tiny", "modaverse-7b"} <= set(list_configs())
    tiny = load_config("tiny")
    assert tiny.encoder.arch == "imagebind_tiny112" and tiny.encoder.weights is None
    assert Path(tiny.encoder.tower_weights).is_dir()  # the bound towers ship with the package
    big = load_config("modaverse-7b")
    assert big.llm.model == "lmsys/vicuna-7b-v1.5"
    assert big.encoder.weights.endswith("imagebind_huge.pth")
    assert big.zoo["text-to-image"].defaults == {"steps": 50, "guidance": 7.5, "width": 512, "height": 512}
    assert big.zoo["text-to-video"].model == "damo-vilab/text-to-video-ms-1.7b"
    assert big.zoo["text-to-audio"].model == "cvssp/audioldm-l-full"


def test_every_launcher_config_says_what_has_run_it():
    """No accelerate config ships unrun without saying so: its header's status line, listed by
    `modaverse configs`; the DeepSpeed one says it is GPU-only and untested."""
    shipped = dict(launch_configs())
    assert set(shipped) == {"configs/accelerate/ddp.yaml", "configs/accelerate/fsdp.yaml",
                            "configs/accelerate/zero2.yaml"}
    assert all(status != "status not stated" for status in shipped.values())
    assert "tests/test_distributed.py" in shipped["configs/accelerate/fsdp.yaml"]
    assert shipped["configs/accelerate/zero2.yaml"].startswith("GPU-only, untested")


def test_set_overrides_any_key_with_typed_values():
    c = load_config("tiny", ["encoder.batch_size=3", "adaptor.shared=true", "encoder.kwargs.out_embed_dim=16",
                             "encoder.modalities=[image, audio]"])
    assert c.encoder.batch_size == 3 and c.adaptor.shared is True
    assert ImageBindConfig.from_encoder(c.encoder).out_embed_dim == 16
    assert ImageBindConfig.from_encoder(c.encoder).towers == ("vision", "audio")


@pytest.mark.parametrize(
    "override,message",
    [
        ("encoder.batchsize=3", "--set encoder.batchsize=3: encoder.batchsize: unknown key"),
        ("encoder.batch_size=many", "encoder.batch_size: Input should be a valid integer"),
        ("encoder.arch=imagebind_giant", "unknown architecture 'imagebind_giant'"),
        ("encoder.modalities=[smell]", "encoder.modalities.0"),
        ("adaptor.projector=transformer", "unknown projector 'transformer'"),
        ("encoder.device=gpu", "--set encoder.device=gpu: encoder.device: unknown device 'gpu'"),
        ("encoder", "expected KEY=VALUE"),
        ("encoder.arch.x=1", "encoder.arch is not a section"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config("tiny", [override])


def test_bad_file_names_file_and_key(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("encoder:\n  arch: imagebind_tiny\n  devcie: cpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"{p}: encoder.devcie: unknown key"
    p.write_text("encoder:\n  batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: encoder\.batch_size: Input should be a valid integer"):
        load_config(p)
    p.write_text("encoder: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file or packaged config"):
        load_config(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_yaml_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"x")
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("encoder:\n  arch: imagebind_tiny\n  weights: ./w.safetensors\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(p).encoder.weights == str(tmp_path / "sub" / "w.safetensors")


def test_every_key_is_documented():
    from modaverse.cli.setup import describe_keys

    rows = describe_keys()
    assert {"encoder.weights", "media.audio.clips", "adaptor.shared", "zoo.<capability>.plugin"} <= {r[0] for r in rows}
    assert [r[0] for r in rows if not r[3]] == []  # `modaverse configs --keys` is the reference
