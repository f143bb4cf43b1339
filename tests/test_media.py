"""Every loader on generated files of every listed format, plus broken files."""

import numpy as np
import pytest
import torch

from modaverse.core.errors import MediaError
from modaverse.core.modality import INPUT_SHAPE
from modaverse.media import detect_modality, load_media

from . import media_factory as mf


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp", ".gif"])
def test_images(tmp_path, ext):
    item = load_media(mf.image(tmp_path / f"a{ext}"))
    assert item.modality == "image"
    assert item.tensor.shape == INPUT_SHAPE["image"]
    assert torch.isfinite(item.tensor).all()


def test_gif_uses_first_frame(tmp_path):
    gif = mf.image(tmp_path / "a.gif")
    from PIL import Image

    first = Image.open(gif).convert("RGB")
    first.save(tmp_path / "first.png")
    assert torch.equal(load_media(gif).tensor, load_media(tmp_path / "first.png").tensor)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3", ".ogg", ".m4a"])
def test_audio(tmp_path, ext):
    item = load_media(mf.audio(tmp_path / f"a{ext}", sr=22050 if ext != ".ogg" else 48000))
    assert item.modality == "audio"
    assert item.tensor.shape == INPUT_SHAPE["audio"]
    assert torch.isfinite(item.tensor).all()


def test_lossy_audio_is_close_to_its_source(tmp_path):
    wav = load_media(mf.audio(tmp_path / "a.wav", sr=16000)).tensor
    flac = load_media(mf.audio(tmp_path / "a.flac", sr=16000)).tensor
    mp3 = load_media(mf.audio(tmp_path / "a.mp3", sr=16000)).tensor
    assert (wav - flac).abs().mean() < 1e-2  # lossless; log-mel of near-silent bins amplifies rounding
    assert (wav - mp3).abs().mean() < 0.2  # lossy but the same sound


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".mkv", ".mov", ".avi"])
def test_videos(tmp_path, ext):
    item = load_media(mf.video(tmp_path / f"v{ext}"))
    assert item.modality == "video"
    assert item.tensor.shape == INPUT_SHAPE["video"]


def test_short_video_and_audio_still_give_all_clips(tmp_path):
    v = load_media(mf.video(tmp_path / "v.mp4", frames=6, fps=15)).tensor
    a = load_media(mf.audio(tmp_path / "a.wav", seconds=0.5)).tensor
    assert v.shape == INPUT_SHAPE["video"] and a.shape == INPUT_SHAPE["audio"]


def test_container_sniffing(tmp_path):
    assert detect_modality(mf.video(tmp_path / "v.webm")) == "video"
    assert detect_modality(mf.audio(tmp_path / "sound.webm")) == "audio"  # audio-only webm
    assert detect_modality(mf.video(tmp_path / "va.mp4", with_audio=True)) == "video"
    assert detect_modality(mf.audio(tmp_path / "a.mkv")) == "audio"


def test_depth_png_and_npy(tmp_path):
    item = load_media(mf.depth_png(tmp_path / "d.png"))
    assert item.modality == "depth"  # 16-bit PNG is depth without being told
    assert item.tensor.shape == (1, 224, 224)
    assert 0.4 < item.tensor.min() and item.tensor.max() < 4.1  # millimetres -> metres
    np.save(tmp_path / "d.npy", np.full((300, 400), 2.0, np.float32))
    with pytest.raises(MediaError, match="fits depth and thermal"):  # [H, W] is ambiguous
        load_media(tmp_path / "d.npy")
    d = load_media(tmp_path / "d.npy", "depth")
    assert d.tensor.shape == (1, 224, 224) and torch.allclose(d.tensor, torch.tensor(2.0))


def test_thermal_png_and_npy(tmp_path):
    item = load_media(mf.thermal_png(tmp_path / "t.png"), "thermal")
    assert item.tensor.shape == (1, 224, 224)
    assert 0 <= item.tensor.min() and item.tensor.max() <= 1
    np.save(tmp_path / "t.npy", np.ones((1, 224, 224), np.float32))
    assert load_media(tmp_path / "t.npy", "thermal").tensor.shape == (1, 224, 224)


def test_imu_csv_and_npy(tmp_path):
    item = load_media(mf.imu_csv(tmp_path / "i.csv"))
    assert item.modality == "imu" and item.tensor.shape == (6, 2000)
    short = load_media(mf.imu_csv(tmp_path / "s.csv", n=500, header=False)).tensor
    assert short.shape == (6, 2000) and torch.all(short[:, 500:] == 0)
    np.save(tmp_path / "rows.npy", np.ones((3000, 6), np.float32))
    assert load_media(tmp_path / "rows.npy").tensor.shape == (6, 2000)


def test_npy_in_model_shape_is_used_as_is(tmp_path):
    for modality in ("image", "audio", "imu"):
        arr = np.random.default_rng(1).standard_normal(INPUT_SHAPE[modality]).astype(np.float32)
        np.save(tmp_path / f"{modality}.npy", arr)
        item = load_media(tmp_path / f"{modality}.npy")
        assert item.modality == modality
        assert torch.equal(item.tensor, torch.from_numpy(arr))


def test_ambiguous_npy_asks_for_modality(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((1, 224, 224), np.float32))
    with pytest.raises(MediaError, match="fits depth and thermal; pass --modality"):
        load_media(tmp_path / "m.npy")


BROKEN = {
    "missing": ("nope.png", "no such file"),
    "empty": ("empty.wav", "file is empty"),
    "unsupported": ("notes.txt", "unsupported extension"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files(tmp_path, case):
    name, reason = BROKEN[case]
    if case != "missing":
        (tmp_path / name).write_bytes(b"" if case == "empty" else b"hello")
    with pytest.raises(MediaError, match=reason) as err:
        load_media(tmp_path / name)
    assert str(err.value).startswith(str(tmp_path / name))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("keep", [0.4, 0.8])
@pytest.mark.parametrize(
    "maker,ext",
    [(mf.image, ".png"), (mf.image, ".jpg"), (mf.audio, ".wav"), (mf.audio, ".flac"), (mf.audio, ".mp3"),
     (mf.audio, ".m4a"), (mf.video, ".mp4"), (mf.video, ".webm"), (mf.video, ".mkv"), (mf.video, ".mov")],
)
def test_truncated_files_fail_with_a_named_reason(tmp_path, maker, ext, keep):
    good = maker(tmp_path / f"good{ext}")
    bad = mf.truncate(good, tmp_path / f"bad{ext}", keep=keep)
    with pytest.raises(MediaError) as err:
        load_media(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


@pytest.mark.parametrize("src,dst", [(".wav", ".png"), (".png", ".wav"), (".mp4", ".jpg"), (".png", ".mp4")])
def test_mislabelled_files(tmp_path, src, dst):
    maker = {".wav": mf.audio, ".png": mf.image, ".mp4": mf.video}[src]
    real = maker(tmp_path / f"real{src}")
    fake = tmp_path / f"fake{dst}"
    fake.write_bytes(real.read_bytes())
    with pytest.raises(MediaError, match="mislabelled"):
        load_media(fake)


def test_bad_arrays(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(MediaError, match="cannot read .npy"):
        load_media(tmp_path / "bad.npy")
    np.save(tmp_path / "nan.npy", np.full((6, 2000), np.nan, np.float32))
    with pytest.raises(MediaError, match="NaN"):
        load_media(tmp_path / "nan.npy")
    np.save(tmp_path / "five.npy", np.zeros((5, 100), np.float32))
    with pytest.raises(MediaError, match="6 channels"):
        load_media(tmp_path / "five.npy", "imu")
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(MediaError, match="non-numeric"):
        load_media(tmp_path / "bad.csv")
