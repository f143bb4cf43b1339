"""Images -> ImageBind's vision input, with Pillow only (no torchvision).

Upstream resizes the PIL image itself (Pillow's bicubic, uint8 in and out) before
converting to float; resizing float tensors instead shifts pixels by up to 0.23 after
normalisation, so Pillow does the resize here too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from modaverse.config import MAX_PIXELS
from modaverse.core.errors import MediaError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def too_large(width: int, height: int, max_pixels: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width * height <= max_pixels:
        return None
    return (f"image declares {width} x {height} = {width * height / 1e6:.0f} MP, over the "
            f"{max_pixels / 1e6:g} MP limit (media.max_pixels)")


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Checks the declared size, then fully decodes the first frame, so bombs and truncated
    files fail here, by name, before any large allocation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        reason = too_large(*img.size, max_pixels)
        if reason:
            img.close()
            raise MediaError(path, reason)
        img.seek(0)
        img.load()
        return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(path, f"image refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(path, f"cannot decode image ({e})") from None


def resize_center_crop(img: Image.Image, size: int = 224) -> Image.Image:
    """Shorter side to ``size`` (bicubic), then a centred ``size`` x ``size`` crop."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """[C, H, W] float in [0, 1], like torchvision's ToTensor for 8-bit images."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


def normalize(x: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def load_image(path: str | Path, size: int = 224, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    img = open_image(path, max_pixels).convert("RGB")
    return normalize(pil_to_tensor(resize_center_crop(img, size)))
