import pytest
import torch

from modaverse.adaptors import Adaptors, build_projector
from modaverse.config import load_config


def test_per_modality_adaptors_are_distinct():
    a = Adaptors(["image", "video", "audio"], 32, 64)
    x = torch.randn(2, 32)
    assert a("image", x).shape == (2, 1, 64)
    assert not torch.allclose(a("image", x), a("video", x))  # image and video do not share
    assert set(a.projectors) == {"image", "video", "audio"}


def test_shared_projection_like_pandagpt():
    a = Adaptors(["image", "video", "audio"], 32, 64, shared=True)
    x = torch.randn(2, 32)
    assert torch.equal(a("image", x), a("audio", x))
    assert list(a.projectors) == ["shared"]


def test_tokens_per_input_and_projector_strings():
    a = Adaptors(["image"], 32, 64, projector="mlp2x_gelu", tokens_per_input=4)
    assert a("image", torch.randn(3, 32)).shape == (3, 4, 64)
    assert isinstance(build_projector("mlp3x_gelu", 8, 8), torch.nn.Sequential)
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("mlp0x_gelu", 8, 8)
    with pytest.raises(KeyError, match="no adaptor for modality"):
        a("audio", torch.randn(1, 32))


def test_from_config():
    cfg = load_config("tiny", ["adaptor.tokens_per_input=2"]).adaptor
    a = Adaptors.from_config(cfg, ["image", "audio"], 32, 64)
    assert a("audio", torch.randn(1, 32)).shape == (1, 2, 64)


def test_image_and_video_have_distinct_markers_and_share_the_vision_tower():
    from modaverse.modality import MODALITIES, TOWER, markers

    assert TOWER["image"] == TOWER["video"] == "vision"
    assert markers("image") == ("<Image>", "</Image>") and markers("video") == ("<Video>", "</Video>")
    assert len({markers(m) for m in MODALITIES}) == len(MODALITIES)


def test_public_api_is_importable_lazily():
    import modaverse

    assert modaverse.load_config("tiny").name == "tiny"
    assert modaverse.Encoder.__name__ == "Encoder"
    assert set(modaverse.__all__) == {*modaverse._EXPORTS, "__version__"}
    with pytest.raises(AttributeError):
        modaverse.nothing_here  # noqa: B018
