"""Hostile media through the real CLI: decompression bombs (PNG and JPEG, over Pillow's limit and
under it), NaN sensor data. Each is one line naming the file and the reason, exit 2, and no
output file is written."""


import numpy as np
import pytest
from PIL import Image

from modaverse.core.errors import MediaError
from modaverse.media import MediaConfig, load_media

from . import media_factory as mf
from .conftest import one_line_error, run_cli


def low_bit_bomb(path, side: int = 9000) -> None:
    """A real 1-bit PNG of side x side (81 MP: under Pillow's 89 MP warning), a few kB on disk,
    that would cost side^2 x 4 bytes once converted to RGB."""
    Image.new("1", (side, side)).save(path, format="PNG", optimize=True)


@pytest.mark.parametrize("make", ["png-over-pillow", "jpeg-over-pillow", "jpeg-over-ours", "low-bit-under-pillow"])
def test_image_bombs_are_one_line_errors(tmp_path, make):
    bomb = tmp_path / ("bomb.png" if "png" in make or "low-bit" in make else "bomb.jpg")
    if make == "png-over-pillow":
        mf.png_declaring(bomb, 40000, 40000)  # 1.6 G pixels
    elif make == "jpeg-over-pillow":
        mf.jpeg_declaring(bomb, 65000, 65000)
    elif make == "jpeg-over-ours":
        mf.jpeg_declaring(bomb, 8000, 8000)  # 64 MP: Pillow would decode it
    else:
        low_bit_bomb(bomb)
    assert bomb.stat().st_size < 100_000
    out = tmp_path / "emb.safetensors"
    r = run_cli("embed", bomb, "--output", out)
    one_line_error(r, str(bomb))
    assert ("media.max_pixels" in r.stderr) or ("decompression bomb" in r.stderr)
    assert not out.exists()


def test_the_pixel_cap_is_a_config_key(tmp_path):
    img = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), "blue").save(img)
    with pytest.raises(MediaError, match=r"300 x 200 .* over the 0.05 MP limit \(media.max_pixels\)"):
        load_media(img, config=MediaConfig(max_pixels=50_000))
    assert load_media(img, config=MediaConfig(max_pixels=60_000)).modality == "image"
    r = run_cli("embed", img, "--output", tmp_path / "e.safetensors", "--set", "media.max_pixels=1000")
    one_line_error(r, str(img), "media.max_pixels")


@pytest.mark.parametrize("kind", ["csv", "npy-imu", "npy-depth", "npy-thermal"])
def test_nan_and_inf_in_sensor_data_name_the_file(tmp_path, kind):
    if kind == "csv":
        path = tmp_path / "imu.csv"
        rows = [",".join(["0.1"] * 6)] * 50
        rows[7] = "0.1,0.2,nan,0.3,0.1,0.0"
        path.write_text("ax,ay,az,gx,gy,gz\n" + "\n".join(rows) + "\n")
        modality = "imu"
    else:
        modality = kind.split("-")[1]
        arr = np.zeros((6, 500) if modality == "imu" else (64, 64), dtype=np.float32)
        arr[2, 3] = np.inf if modality == "thermal" else np.nan
        path = tmp_path / f"{modality}.npy"
        np.save(path, arr)
    r = run_cli("embed", path, "--modality", modality, "--output", tmp_path / "e.safetensors")
    one_line_error(r, str(path), "NaN or infinite")


@pytest.mark.parametrize("name", ["clip.wav", "clip.m4a", "clip.mp3"])
def test_a_video_behind_an_audio_extension_is_mislabelled(tmp_path, name):
    """The documented rule: bytes and extension agree. (An audio-only .mp4 is read as audio.)"""
    from . import media_factory as mf

    src = mf.video(tmp_path / "src.mp4", with_audio=True)
    path = tmp_path / name
    path.write_bytes(src.read_bytes())
    r = run_cli("embed", path, "--output", tmp_path / "e.safetensors")
    one_line_error(r, str(path), "mislabelled")
    sound_only = mf.audio(tmp_path / "tone.m4a")
    assert load_media(sound_only).modality == "audio"
