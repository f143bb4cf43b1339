import subprocess
import sys

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


def test_a_tokenwise_projector_shares_its_later_layers_between_tokens():
    """Only the first layer of mlpNx_gelu_tokenwise grows with the tokens: at 4 tokens into 576 it is
    about a tenth of LLaVA's mlp2x_gelu, and each token's later layers are the same function."""
    wide, lean = (build_projector(s, 64, 576, 4) for s in ("mlp2x_gelu", "mlp2x_gelu_tokenwise"))
    count = [sum(p.numel() for p in m.parameters()) for m in (wide, lean)]
    assert count[1] == 64 * 576 * 4 + 576 * 4 + 576 * 576 + 576 and count[1] * 10 < count[0]
    x = torch.randn(3, 64)
    tokens = lean(x).unflatten(-1, (4, 576))
    first = lean.first(x).unflatten(-1, (4, 576))
    assert torch.allclose(tokens[:, 2], lean.rest(first[:, 2]), atol=1e-6)
    a = Adaptors(["image"], 64, 576, projector="mlp2x_gelu_tokenwise", tokens_per_input=4)
    assert a("image", x).shape == (3, 4, 576)
    assert load_config("tiny", ["adaptor.projector=mlp3x_gelu_tokenwise"]).adaptor.projector == "mlp3x_gelu_tokenwise"
    with pytest.raises(Exception, match="unknown projector"):
        load_config("tiny", ["adaptor.projector=mlp2x_relu_tokenwise"])


def test_from_config():
    cfg = load_config("tiny", ["adaptor.tokens_per_input=2"]).adaptor
    a = Adaptors.from_config(cfg, ["image", "audio"], 32, 64)
    assert a("audio", torch.randn(1, 32)).shape == (1, 2, 64)


def test_image_and_video_have_distinct_markers_and_share_the_vision_tower():
    from modaverse.core.modality import MODALITIES, TOWER, markers

    assert TOWER["image"] == TOWER["video"] == "vision"
    assert markers("image") == ("<Image>", "</Image>") and markers("video") == ("<Video>", "</Video>")
    assert len({markers(m) for m in MODALITIES}) == len(MODALITIES)


def test_public_api_is_importable_lazily():
    """``import modaverse`` and reading a config load no torch; the first model class does."""
    probe = ("import sys, modaverse\n"
             "assert 'torch' not in sys.modules, 'import modaverse loaded torch'\n"
             "assert modaverse.load_config('tiny').name == 'tiny'\n"
             "assert 'torch' not in sys.modules, 'load_config loaded torch'\n"
             "assert modaverse.Encoder.__name__ == 'Encoder' and 'torch' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import modaverse

    assert set(modaverse.__all__) == {*modaverse._EXPORTS, "__version__"}
    with pytest.raises(AttributeError):
        modaverse.nothing_here  # noqa: B018


GEMMA_LIKE = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "max_position_embeddings": 256}


@pytest.mark.parametrize(("projector", "standardize", "shared"),
                         [("mlp2x_gelu", True, False), ("mlp2x_gelu", False, False), ("linear", False, False),
                          ("linear", False, True)])
def test_media_tokens_start_at_the_scale_of_text_embeddings(projector, standardize, shared):
    """Gemma multiplies text embeddings by sqrt(hidden) (x8 here, x25 at 640 wide); untuned
    projectors gave media tokens norm ~1, which the LLM barely sees."""
    from modaverse.encoder.embed import Encoder
    from modaverse.pipeline.assistant import build_trainable

    config = load_config("tiny", ["checkpoint=null", f"adaptor.projector={projector}",
                                  f"adaptor.standardize={str(standardize).lower()}", f"adaptor.shared={str(shared).lower()}"])
    config.llm.arch = dict(GEMMA_LIKE)
    encoder = Encoder.from_config(config.encoder, config.media)
    llm, adaptors = build_trainable(config, encoder.dim)
    target = llm.text_embedding_norm()
    assert target > 1  # sqrt(64) x the unscaled rows' ~0.16
    from .conftest import IB

    files = [IB / "image_a.png", IB / "image_b.jpg", IB / "audio_44k.wav", IB / "video.mp4"]
    items = [encoder.load(f) for f in files]
    feats, mods = encoder.encode(items), [i.modality for i in items]
    # at initialisation, on real encoder features: within a factor of two of the text scale
    with torch.no_grad():
        raw = [float(adaptors(m, f[None]).norm(dim=-1).mean()) for m, f in zip(mods, feats, strict=True)]
    # (one projector for all cannot undo ImageBind's per-tower scales, audio x20 and vision x1;
    # standardisers are fitted on training features, so only training's calibration below applies)
    if not shared and not standardize:
        assert all(target / 2 < n < target * 2 for n in raw), (raw, target)
    # calibrated on the run's own features (what training does): the mean norm is the text norm
    adaptors.match_scale(target, feats, mods)
    with torch.no_grad():
        got = torch.cat([adaptors(m, feats[[i for i, x in enumerate(mods) if x == m]]) for m in dict.fromkeys(mods)])
    assert abs(float(got.norm(dim=-1).mean()) / target - 1) < 0.35
