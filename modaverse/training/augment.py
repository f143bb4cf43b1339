"""Augmentations that keep the label, in plain torch (torchvision stays banned), on tower inputs.

In the synthetic world a colour, a shape, a direction and a kind of sound are labels, so only
what leaves them true is allowed: crops that keep every object (at most :data:`CROP` of a side),
zoom out, turns and a slight shear (upstream's RandAugment has both), flips of still pictures (never
of a video, whose direction is its label), brightness and
contrast (never hue, saturation or grayscale; never on a thermal image, whose grey level is a
temperature), blur and noise; audio gets gain and noise, never
pitch; IMU a gain and noise. Each batch draws its own parameters from a seeded generator, so a
resumed run augments exactly as the uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The most a crop takes off a side; the synthetic objects keep this margin (scenes.SPANS).
CROP = 0.06
#: The largest turn of a still picture or map (RandAugment's Rotate), and of a video.
TURN, VIDEO_TURN = 30.0, 10.0


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _geometry(x: torch.Tensor, g: torch.Generator, flip: bool, turn: float) -> torch.Tensor:
    """A random crop of at most CROP per side or a zoom out to 80-100%, a turn of up to ``turn`` degrees
    and a slight shear (RandAugment's geometric operations, upstream's recipe), resampled to the same size
    (``x``: [B, C, H, W] or [B, C, T, H, W], the same geometry for every frame)."""
    b = x.shape[0]
    scale = torch.where(torch.rand(b, generator=g) < 0.5, _u(g, b, 1 - CROP, 1.0), _u(g, b, 1.0, 1.25))
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale.clamp(max=1)).unsqueeze(1)
    angle, shear = torch.deg2rad(_u(g, b, -turn, turn)), _u(g, b, -0.15, 0.15)
    cos, sin = torch.cos(angle), torch.sin(angle)
    mirror = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * scale * mirror, (cos * shear - sin) * scale
    theta[:, 1, 0], theta[:, 1, 1] = sin * scale * mirror, (sin * shear + cos) * scale
    theta[:, :, 2] = shift
    frames = x.ndim == 5
    if frames:
        bt = x.permute(0, 2, 1, 3, 4)  # B T C H W
        t = bt.shape[1]
        flat = bt.reshape(b * t, *bt.shape[2:])
        grid = F.affine_grid(theta.repeat_interleave(t, 0), list(flat.shape), align_corners=False)
        out = F.grid_sample(flat, grid, padding_mode="border", align_corners=False)
        return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _blur(x: torch.Tensor, g: torch.Generator, p: float = 0.3) -> torch.Tensor:
    """A Gaussian blur (sigma up to 1 px) on a random share ``p`` of the batch."""
    if float(torch.rand(1, generator=g)) > p:
        return x
    sigma = float(_u(g, 1, 0.3, 1.0))
    k = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-2], shape[-1])
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
    return flat.reshape(shape)


def _view(b: int, ndim: int) -> tuple[int, ...]:
    return (b,) + (1,) * (ndim - 1)


def pictures(x: torch.Tensor, g: torch.Generator, *, flip: bool, turn: float, levels: bool = True) -> torch.Tensor:
    """Images, videos (``flip=False``), depth and thermal maps, already normalised. ``levels`` False keeps
    the values themselves (a thermal image's grey level is a temperature, and a temperature can be a label)."""
    x = _geometry(x.float(), g, flip, turn)
    b, shape = x.shape[0], _view(x.shape[0], x.ndim)
    if levels:
        x = x * _u(g, b, 0.8, 1.2).view(shape) + _u(g, b, -0.2, 0.2).view(shape)  # contrast, brightness
    x = _blur(x, g)
    return x + torch.randn(x.shape, generator=g) * _u(g, b, 0.0, 0.08).view(shape)


def audio(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Normalised log-mel clips: a gain of -6 to +6 dB is a shift of the log energies; then noise."""
    b, shape = x.shape[0], _view(x.shape[0], x.ndim)
    gain_db = _u(g, b, -6.0, 6.0)
    x = x + (2 * torch.log(10 ** (gain_db / 20)) / 9.138).view(shape)  # 9.138: ImageBind's filterbank std
    return x + torch.randn(x.shape, generator=g) * _u(g, b, 0.0, 0.1).view(shape)


def imu(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b, shape = x.shape[0], _view(x.shape[0], x.ndim)
    x = x * _u(g, b, 0.9, 1.1).view(shape)
    return x + torch.randn(x.shape, generator=g) * _u(g, b, 0.0, 0.03).view(shape)


def augment(tower: str, x: torch.Tensor, g: torch.Generator, *, still: bool = True) -> torch.Tensor:
    """One batch of a tower's inputs; ``still`` is False for videos (no flips)."""
    if tower in ("vision", "depth", "thermal"):
        # a video's direction is its label: it is never mirrored, and turned only a little
        return pictures(x, g, flip=still and tower == "vision", turn=TURN if still else VIDEO_TURN,
                        levels=tower != "thermal")
    if tower == "audio":
        return audio(x, g)
    if tower == "imu":
        return imu(x, g)
    return x

