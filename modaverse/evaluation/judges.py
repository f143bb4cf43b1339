"""Judges that need no network: what a rendered picture, clip or sound shows, read from its pixels and samples.

A round trip (``modaverse eval roundtrip``) asks whether a generator's render shows what its prompt
named. A learned judge would share the encoder's blind spots, so these read the synthetic world's
own facts directly:

- **colour**: saturated pixels voted to the nearest colour of :data:`~modaverse.data.scenes.COLOURS`
  (backgrounds are pale and clutter is grey, so neither votes);
- **shape**, on one colour's mask: a triangle's outline swings far and near the centroid (its
  corners and edges), a circle's and a ring's do not; a ring's centre is empty, a circle's full;
- **direction**: the path of the coloured centroid from the first frames to the last;
- **sound**: spectral flatness (noise is flat, tones are not), then the dominant frequency and
  whether it rises (chirp), sits low (hum) or high (beep);
- **edit kept**: the mean absolute change of the pixels outside both pictures' objects.

Each judge also scores real samples of the world, so its own error is printed beside a generator's.
"""

from __future__ import annotations

import numpy as np

from modaverse.data import scenes

PALETTE = np.array(list(scenes.COLOURS.values()), dtype=np.float32)
NAMES = list(scenes.COLOURS)
#: A pixel votes for a colour when its channels spread this far (pale backgrounds and grey clutter do not).
SATURATION = 70
#: A triangle's outline: the spread of its boundary's distance from the centroid, over the mean.
TRIANGLE_SPREAD = 0.16
#: "The rest kept": the mean absolute change of the pixels outside the objects, in levels of 255.
KEPT_LEVELS = 16.0


def colour_masks(img: np.ndarray) -> dict[str, np.ndarray]:
    """``[H, W, 3]`` uint8 -> each palette colour's pixels (saturated pixels, nearest colour)."""
    x = img.astype(np.float32)
    saturated = (x.max(-1) - x.min(-1)) > SATURATION
    nearest = np.argmin(((x[..., None, :] - PALETTE) ** 2).sum(-1), axis=-1)
    return {name: saturated & (nearest == i) for i, name in enumerate(NAMES)}


def colours(img: np.ndarray, share: float = 0.25) -> list[str]:
    """The colours shown, most pixels first: each with at least ``share`` of the largest one's pixels."""
    counts = {k: int(m.sum()) for k, m in colour_masks(img).items()}
    top = max(counts.values())
    if top < 4:
        return []
    return [k for k, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= share * top]


def colour(img: np.ndarray) -> str | None:
    found = colours(img)
    return found[0] if found else None


def shape(mask: np.ndarray) -> str | None:
    """circle, triangle or ring from one object's pixels (``None``: too few to tell)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 6:
        return None
    cy, cx = ys.mean(), xs.mean()
    # the outline: per angle, the farthest pixel of the mask from the centroid
    angle = np.arctan2(ys - cy, xs - cx)
    dist = np.hypot(ys - cy, xs - cx)
    bins = ((angle + np.pi) / (2 * np.pi) * 24).astype(int) % 24
    far = np.array([dist[bins == b].max() for b in range(24) if (bins == b).any()])
    if len(far) < 12 or far.mean() < 1.5:
        return None
    if far.std() / far.mean() > TRIANGLE_SPREAD:
        return "triangle"
    r = far.mean()
    inner = dist < 0.35 * r  # the middle third of the radius: empty in a ring
    covered = np.zeros_like(mask)
    covered[ys[inner], xs[inner]] = True
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    disc = np.hypot(yy - cy, xx - cx) < 0.35 * r
    return "ring" if covered.sum() < 0.5 * max(1, disc.sum()) else "circle"


def objects(img: np.ndarray) -> list[tuple[str, str | None]]:
    """(colour, shape) of each object shown, in the order captions name them (that of the palette)."""
    masks = colour_masks(img)
    shown = colours(img)
    return [(c, shape(masks[c])) for c in NAMES if c in shown]


def direction(frames: np.ndarray) -> str | None:
    """``[T, H, W, 3]`` -> right, left, down or up: where the coloured centroid travels."""
    points = []
    for f in frames:
        ys, xs = np.nonzero(np.any(list(colour_masks(f).values()), axis=0))
        if len(xs) >= 3:
            points.append((xs.mean(), ys.mean()))
    if len(points) < 2:
        return None
    k = max(1, len(points) // 4)
    (x0, y0), (x1, y1) = np.mean(points[:k], 0), np.mean(points[-k:], 0)
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 1.0:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


FRAME = 512  # samples per analysis frame of a sound


def loud_power(x: np.ndarray) -> np.ndarray:
    """Power spectra ``[frames, FRAME // 2 + 1]`` of a mono waveform's frames within 10 dB of its loudest."""
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[:: FRAME // 2] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-10
    energy = power.sum(-1)
    return power[energy > 0.1 * energy.max()]


def flatness(power: np.ndarray) -> float:
    """Mean spectral flatness of power spectra: 0 for a pure tone, about 0.56 for white noise."""
    return float(np.mean(np.exp(np.log(power).mean(-1)) / power.mean(-1)))


def sound(wave: np.ndarray, rate: int = scenes.AUDIO_RATE) -> str | None:
    """low, high, noise or chirp from a mono or stereo waveform."""
    x = wave.mean(-1) if wave.ndim == 2 else wave
    if len(x) < 4 * FRAME or np.sqrt(np.mean(x**2)) < 1e-3:  # too short, or silence
        return None
    p = loud_power(x)
    if len(p) < 2:
        return None
    if flatness(p) > 0.2:
        return "noise"
    freqs = np.fft.rfftfreq(FRAME, 1 / rate)[np.argmax(p, -1)]
    k = max(1, len(freqs) // 4)
    start, end = np.median(freqs[:k]), np.median(freqs[-k:])
    if end > 2 * max(start, 1.0):
        return "chirp"
    middle = float(np.median(freqs))
    return "low" if middle < 700 else "high"


def kept(before: np.ndarray, after: np.ndarray) -> float:
    """Mean absolute change (levels of 255) of the pixels that are no object's in either picture."""
    objects_ = np.any([*colour_masks(before).values(), *colour_masks(after).values()], axis=0)
    grow = objects_.copy()  # a pixel's margin: edges blur under any decoder
    grow[1:] |= objects_[:-1]
    grow[:-1] |= objects_[1:]
    grow[:, 1:] |= objects_[:, :-1]
    grow[:, :-1] |= objects_[:, 1:]
    rest = ~grow
    if not rest.any():
        return 0.0
    return float(np.abs(before.astype(np.float32) - after.astype(np.float32))[rest].mean())
