"""The pieces binding rests on: training mode of the port, the text head's contract, tower files."""

import json

import pytest
import torch

from modaverse.core.errors import ModaverseError, WeightsError
from modaverse.encoder.imagebind.config import ImageBindConfig
from modaverse.encoder.imagebind.model import ImageBind
from modaverse.encoder.imagebind.towers import load_towers, save_tower, tower_files
from modaverse.encoder.text import EOT, TextTokenizer, word_level_json
from modaverse.training.bind import info_nce, soft_targets, swapped_caption

CAPTIONS = ["a red circle", "a blue ring moving left", "a green triangle and a yellow ring"]


def tiny112(**kw) -> ImageBind:
    model = ImageBind(ImageBindConfig.from_name("imagebind_tiny112", **kw))
    model.init_weights(0)
    return model


def test_image_size_is_an_architecture_field():
    model = tiny112(towers=("vision", "depth"))
    assert model.modality_preprocessors["vision"].pos_embedding_helper.pos_embed.shape[1] == 1 + 7 * 7
    assert model.forward_tower("vision", torch.zeros(2, 3, 112, 112)).shape == (2, 64)
    with pytest.raises(ValueError, match="inputs must have the size the tower was built for"):
        model.forward_tower("depth", torch.zeros(1, 1, 224, 224))


def test_unfrozen_tower_trains_with_upstream_drop_rates_and_others_stay_frozen():
    model = tiny112()
    model.unfreeze(["imu"])
    model.train()
    assert {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad} == {"imu"}
    assert model.modality_trunks["imu"].training and not model.modality_trunks["vision"].training
    rates = [b.drop_path.p for b in model.modality_trunks["imu"].blocks]
    assert rates == pytest.approx([0.0, model.config.imu_drop_path])  # linear in depth, as upstream
    x = torch.randn(4, 6, 2000)
    torch.manual_seed(0)
    a = model.forward_tower("imu", x)
    b = model.forward_tower("imu", x)
    assert not torch.allclose(a, b)  # DropPath and the head's dropout act while training
    model.eval()
    assert torch.equal(model.forward_tower("imu", x), model.forward_tower("imu", x))
    with pytest.raises(KeyError, match="not built"):
        tiny112(towers=("vision",)).unfreeze(["audio"])


def test_frozen_encoder_ignores_train_and_has_no_drop_effect(fixture_model, expected):
    fixture_model.train()
    assert not fixture_model.training
    with torch.no_grad():
        emb = fixture_model.forward_tower("text", expected["text.tokens"])
    torch.testing.assert_close(emb, expected["text.embedding"], atol=1e-5, rtol=0)


def test_text_head_reads_the_end_of_text_token():
    """Under the causal mask only the end-of-text position sees every word: changing the last word
    must change the embedding, and the head's index must be that token's position."""
    tok = TextTokenizer(word_level_json(CAPTIONS, 64), 16, 64)
    ids = tok(["a red circle", "a red ring"])
    eot_pos = (ids == 63).float().argmax(1)
    assert ids.argmax(-1).tolist() == eot_pos.tolist() == [4, 4]
    model = tiny112(towers=("text",))
    emb = model.forward_tower("text", ids)
    assert not torch.allclose(emb[0], emb[1])  # the words differ only at the end


def test_tokenizers_that_break_the_head_are_refused():
    good = word_level_json(CAPTIONS, 64)
    with pytest.raises(ModaverseError, match="must be 79"):  # the tower's vocabulary is larger
        TextTokenizer(good, 16, 80)
    doc = json.loads(good)
    doc["post_processor"] = None  # no end-of-text appended
    with pytest.raises(ModaverseError, match="does not end each text"):
        TextTokenizer(json.dumps(doc), 16, 64)
    doc = json.loads(good)
    vocab = doc["model"]["vocab"]
    vocab["zzz"], vocab[EOT] = vocab[EOT], 10  # EOT no longer the largest id
    del vocab[next(k for k, v in vocab.items() if v == 10 and k != EOT)]
    with pytest.raises(ModaverseError, match=f"{EOT} has id 10"):
        TextTokenizer(json.dumps(doc), 16, 64)
    with pytest.raises(ModaverseError, match="distinct words"):
        word_level_json([" ".join(f"w{i}" for i in range(100))], 64)


def test_truncated_rows_keep_the_token_the_head_reads():
    tok = TextTokenizer(word_level_json(CAPTIONS, 64), 4, 64)
    ids = tok(["a green triangle and a yellow ring"])
    assert ids.shape == (1, 4) and ids[0, -1] == tok.eot


def test_tower_file_round_trip_and_strict_loading(tmp_path):
    src = tiny112(towers=("vision", "thermal"))
    with torch.no_grad():
        src.modality_trunks["thermal"].blocks[0].mlp.fc1.weight.add_(1.0)
    path = save_tower(tmp_path / "thermal.safetensors", src, "thermal")
    dst = tiny112(towers=("vision", "thermal"))
    before = dst.state_dict()["modality_trunks.vision.blocks.0.mlp.fc1.weight"].clone()
    load_towers(dst, tower_files(str(tmp_path)))
    for k, v in src.state_dict().items():
        if ".thermal." in k:
            assert torch.equal(dst.state_dict()[k], v), k
    assert torch.equal(dst.state_dict()["modality_trunks.vision.blocks.0.mlp.fc1.weight"], before)
    with pytest.raises(WeightsError, match="holds the thermal tower, not depth"):
        load_towers(tiny112(towers=("depth",)), {"depth": path})
    other = ImageBind(ImageBindConfig.from_name("imagebind_tiny", towers=("thermal",)))
    with pytest.raises(WeightsError, match="does not fit the encoder architecture .*image_size=112"):
        load_towers(other, {"thermal": path})
    with pytest.raises(WeightsError, match="no such folder"):
        tower_files(str(tmp_path / "nope"))
    with pytest.raises(WeightsError, match="unknown tower"):
        tower_files({"sonar": str(path)})


def test_media_size_must_fit_the_architecture(tmp_path):
    from modaverse.config import load_config
    from modaverse.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"media.image_size is 112, but the encoder \(imagebind_tiny\) takes 224-pixel"):
        load_config("tiny", ["encoder.arch=imagebind_tiny"])
    assert load_config("tiny", ["encoder.arch=imagebind_tiny", "encoder.tower_weights=null", "media.image_size=224",
                                "media.video.size=224"]).media.image_size == 224  # checked once all are given
    cfg = tmp_path / "c.yaml"
    (tmp_path / "towers").mkdir()
    (tmp_path / "towers/thermal.safetensors").write_bytes(b"")  # relative paths that exist resolve against the file
    cfg.write_text("base: tiny\nencoder:\n  tower_weights: {thermal: towers/thermal.safetensors}\n")
    assert load_config(str(cfg)).encoder.tower_weights == {"thermal": str(tmp_path / "towers/thermal.safetensors")}


@pytest.mark.parametrize("caption,swapped", [
    ("a red ring and a blue circle", "a red circle and a blue ring"),
    ("an orange ring and a blue circle, flat illustration", "an orange circle and a blue ring, flat illustration"),
    ("a red ring and a blue ring", None),  # the swap would change nothing
    ("a red ring moving left", None),
])
def test_two_object_captions_swap_their_attributes(caption, swapped):
    assert swapped_caption(caption) == swapped


def test_hard_negatives_weigh_on_the_vision_side_only():
    """An extra text row is never a positive, raises the loss when it looks like a picture's embedding,
    and leaves the text-to-vision half alone (it has no picture of its own)."""
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1) * 3
    b = a.clone()
    captions = ["x", "y", "x", "z"]
    plain = info_nce(a, b, soft_targets(captions))
    targets = soft_targets(captions, captions + ["x swapped"])
    assert targets[:, 4].eq(0).all() and torch.equal(targets[:, :4], soft_targets(captions))
    near, far = torch.cat([b, a[1:2]]), torch.cat([b, -a[1:2]])
    assert info_nce(a, near, targets) > info_nce(a, far, targets) > plain - 1e-6
    # the text-to-vision half alone: the plain loss minus its vision-to-text half
    half = torch.nn.functional.cross_entropy((a @ b.T).T, soft_targets(captions).T) / 2
    extra = torch.nn.functional.cross_entropy(a @ near.T, targets) / 2
    assert torch.allclose(info_nce(a, near, targets), extra + half)
