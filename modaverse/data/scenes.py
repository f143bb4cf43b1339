"""The synthetic set's media, drawn from parameter ranges: one range per split.

A held-out score means something only if the held-out inputs differ from the training ones
the way real inputs do. Every nuisance parameter (where the shape is, how big, turned how
far, outlined or filled, on what background and texture, among what clutter; a video's
path, speed, size and length; a sound's duration, loudness, noise and channels) varies over
a wide range in training. Some pictures hold two objects, so an answer must name both. The **in-distribution** split draws new files from the same
ranges. The **shifted** split draws every file's parameters on its shifted axes from values
outside them (:data:`SPANS`), so it measures whether the model reads the content (colour,
shape, kind of sound) rather than recognising conditions it has seen.

The answers name only the content, never a nuisance parameter: what a model must learn is
the same on every split. Each file's parameters go to ``media.jsonl`` beside the set, so
anyone (and the tests) can check which ranges a split was drawn from.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
#: Chosen so that even a random tiny encoder separates them (a square and a circle look alike to it).
SHAPES = ("circle", "triangle", "ring")
#: Sound kind -> (description, is it a tone).
SOUNDS = {"low": ("a low hum", True), "high": ("a high beep", True), "noise": ("a burst of white noise", False),
          "chirp": ("a rising chirp", True)}

IMAGE_SIZE, VIDEO_SIZE, VIDEO_FPS, AUDIO_RATE = 96, 64, 8, 16000

#: Backgrounds: pale ones in training, tinted mid-tones never seen there (a shifted axis).
BACKGROUNDS = {"train": ((255, 255, 255), (245, 240, 225), (230, 230, 230), (225, 235, 245)),
               "shifted": ((190, 150, 190), (150, 190, 170), (200, 185, 140))}


@dataclass(frozen=True)
class Span:
    """A parameter's training range, ``[lo, hi]``; shifted values are drawn from ``outside``."""

    lo: float
    hi: float
    outside: tuple[tuple[float, float], ...]  # the shifted split's intervals, all outside [lo, hi]

    def draw(self, rng: random.Random, shifted: bool) -> float:
        lo, hi = rng.choice(self.outside) if shifted else (self.lo, self.hi)
        return rng.uniform(lo, hi)

    def holds(self, value: float) -> bool:
        return self.lo <= value <= self.hi


#: Every varied parameter, by modality: its training range and its values on the shifted split.
SPANS: dict[str, dict[str, Span]] = {
    "image": {
        "radius": Span(0.2, 0.32, ((0.11, 0.16),)),  # of the image side
        "offset": Span(0.0, 0.12, ((0.17, 0.24),)),  # the centre's largest distance from the middle, per axis
        "rotation": Span(-25.0, 25.0, ((35.0, 60.0), (-60.0, -35.0))),  # degrees
        "aspect": Span(0.8, 1.25, ((0.6, 0.7), (1.45, 1.6))),  # width / height
        "texture": Span(0.0, 0.05, ((0.09, 0.13),)),  # noise amplitude over the background
        "clutter": Span(0, 4, ((6, 9),)),  # grey distractor strokes
    },
    "video": {
        "radius": Span(0.18, 0.3, ((0.1, 0.14),)),
        "speed": Span(1.0, 2.2, ((2.6, 3.2),)),  # pixels per frame
        "frames": Span(16, 28, ((34, 40),)),
        "tilt": Span(-20.0, 20.0, ((35.0, 55.0), (-55.0, -35.0))),  # the path's angle from horizontal or vertical
    },
    "audio": {
        "seconds": Span(1.0, 2.5, ((3.2, 4.0), (0.5, 0.75))),
        "loudness": Span(0.3, 0.8, ((0.12, 0.2),)),  # peak of the signal
        "noise": Span(0.0, 0.04, ((0.06, 0.08),)),  # white noise added under it, peak
        "balance": Span(-0.3, 0.3, ((0.6, 0.9), (-0.9, -0.6))),  # stereo: left-right level difference
    },
    # other sensors' views of the same scenes (modaverse.data.views): only their own nuisances vary here,
    # the geometry is their picture's or video's
    "depth": {
        "distance": Span(3.0, 5.0, ((6.0, 8.0),)),  # metres to the background plane at the middle
        "slope": Span(-0.8, 0.8, ((1.3, 1.8), (-1.8, -1.3))),  # the plane's depth change across the frame (m)
        "near": Span(1.0, 2.2, ((2.5, 2.8),)),  # metres to the objects (each its own, whatever its colour)
        "noise": Span(0.0, 0.03, ((0.06, 0.09),)),  # sensor noise (m)
    },
    "thermal": {
        # degrees C of the background. ImageBind's thermal stem normalises each patch (a LayerNorm), so a
        # thermal tower sees an object's temperature only relative to the background's: over 15 to 25 C the
        # green, yellow and red objects' ratios overlapped and a sixth of the pictures were ambiguous to any
        # tower of upstream's design; over 18 to 22 C they are not (docs/imagebind.md)
        "ambient": Span(18.0, 22.0, ((5.0, 9.0),)),
        "blur": Span(0.0, 1.2, ((2.0, 2.6),)),  # optical blur (pixels, Gaussian sigma)
        "noise": Span(0.0, 1.5, ((3.0, 4.0),)),  # sensor noise (degrees C)
    },
    "imu": {
        "onset": Span(1.0, 4.0, ((5.0, 5.6),)),  # seconds into the 10-s window when the motion starts
        "tilt": Span(-15.0, 15.0, ((25.0, 40.0), (-40.0, -25.0))),  # the device's roll (degrees)
        "noise": Span(0.0, 0.04, ((0.08, 0.12),)),  # accelerometer and gyroscope noise
    },
}

#: How many of a modality's axes each shifted file takes from outside the training ranges, chosen
#: at random per file (the others stay in range: a file pushed to every extreme at once is no
#: longer a picture of anything, and one axis at a time shows which of them a model cannot take).
SHIFTED_AXES = {"image": 2, "video": 2, "audio": 2, "depth": 2, "thermal": 2, "imu": 2}


def axes(modality: str) -> list[str]:
    """The parameters a shifted file may take from outside the training ranges (images and videos: the
    background too, a colour from :data:`BACKGROUNDS` that training never uses)."""
    return [*SPANS[modality], *(["background"] if modality in ("image", "video") else [])]


def draw(modality: str, rng: random.Random, shifted: bool) -> dict:
    """One file's nuisance parameters for its split; a shifted file lists its shifted axes under ``shifted``."""
    spans = SPANS[modality]
    moved = sorted(rng.sample(axes(modality), SHIFTED_AXES[modality])) if shifted else []
    params: dict = {}
    for name, span in spans.items():
        value = span.draw(rng, name in moved)
        params[name] = round(value) if name in ("clutter", "frames") else round(value, 4)
    if modality in ("image", "video"):
        params["background"] = list(rng.choice(BACKGROUNDS["shifted" if "background" in moved else "train"]))
    if modality == "audio":
        params["stereo"] = int("balance" in moved or rng.random() < 0.5)
    if shifted:
        params["shifted"] = moved
    return params


# -- drawing ------------------------------------------------------------------------------------
def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, rotation: float = 0.0,
               aspect: float = 1.0, hollow: float = 0.6) -> np.ndarray:
    """Pixels covered by the shape, in image coordinates. A ring's hole is ``hollow`` of its radius;
    a triangle with ``hollow`` is drawn as an outline (a hollow circle would be a ring)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    a = math.radians(rotation)
    u = ((x - cx) * math.cos(a) + (y - cy) * math.sin(a)) / math.sqrt(aspect)
    v = (-(x - cx) * math.sin(a) + (y - cy) * math.cos(a)) * math.sqrt(aspect)

    def inside(scale: float) -> np.ndarray:
        rr = r * scale
        if shape in ("circle", "ring"):
            return u * u + v * v <= rr * rr
        top, bottom = -rr, rr * 0.8  # an upright triangle: width grows linearly downwards
        half = (v - top) / (bottom - top) * rr
        return (v >= top) & (v <= bottom) & (np.abs(u) <= half)

    if shape == "ring" or (shape == "triangle" and hollow):
        return inside(1.0) & ~inside(hollow)
    return inside(1.0)


def _background(size: int, params: dict, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = params["background"]
    texture = params.get("texture", 0.0)
    if texture:
        img += rng.standard_normal((size, size, 1)).astype(np.float32) * 255 * texture
    for _ in range(int(params.get("clutter", 0))):  # short grey strokes: neither a colour nor a shape of ours
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, math.pi), rng.uniform(size * 0.08, size * 0.2)
        for t in np.linspace(0, 1, 24):
            px, py = int(x0 + t * length * math.cos(angle)), int(y0 + t * length * math.sin(angle))
            if 0 <= px < size and 0 <= py < size:
                img[max(0, py - 1) : py + 1, max(0, px - 1) : px + 1] = 110
    return img


#: A picture of several objects shrinks each (of its radius) and spreads them over the frame, side
#: by side or one above the other, so that none covers another at any size of the ranges.
PAIR_SCALE, PAIR_SPREAD = 0.6, 0.24


@dataclass(frozen=True)
class Layout:
    """Where a picture's objects are: what the RGB picture, its depth map and its thermal image share."""

    background: np.ndarray  # [H, W, 3] float, the textured, cluttered background
    objects: tuple[tuple[str, np.ndarray], ...]  # (colour, covered pixels), drawn in this order


def layout(objects: list[tuple[str, str]], params: dict, seed: int) -> Layout:
    """The (colour, shape) objects placed with the file's parameters."""
    rng = np.random.default_rng(seed)
    s = IMAGE_SIZE
    background = _background(s, params, rng)
    angle = rng.uniform(0, 2 * math.pi)  # the offset's direction; its size is the parameter
    dx, dy = math.cos(angle), math.sin(angle)
    scale = params["offset"] * s / max(abs(dx), abs(dy))
    many = len(objects) > 1
    if many:  # the group moves by half the offset: the objects sit away from the middle already
        scale *= 0.5
    r = params["radius"] * s * (PAIR_SCALE if many else 1.0)
    along = rng.random() < 0.5  # side by side or one above the other, in a random order
    slots = np.linspace(-PAIR_SPREAD, PAIR_SPREAD, len(objects)) * s if many else np.zeros(1)
    placed = []
    for (colour, shape), slot in zip(objects, rng.permutation(slots), strict=True):
        cx, cy = s / 2 + dx * scale + (slot if along else 0), s / 2 + dy * scale + (0 if along else slot)
        # stroke and fill: rings of several widths, a third of the triangles outlined
        hollow = rng.uniform(0.45, 0.72) if shape == "ring" else 0.5 if rng.random() < 0.33 else 0.0
        placed.append((colour, shape_mask(shape, s, cx, cy, r, params["rotation"], params["aspect"], hollow)))
    return Layout(background, tuple(placed))


def picture(objects: list[tuple[str, str]], params: dict, seed: int) -> np.ndarray:
    """An RGB image of the (colour, shape) objects with the file's parameters."""
    scene = layout(objects, params, seed)
    img = scene.background.copy()
    for colour, mask in scene.objects:
        img[mask] = COLOURS[colour]
    return np.clip(img, 0, 255).astype(np.uint8)


#: The four directions a video's shape travels (image coordinates: y grows downwards), named in captions.
DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}


def ease(u: np.ndarray) -> np.ndarray:
    """Smoothstep: the shape starts at rest, speeds up, slows down and stops (what an IMU can feel)."""
    return 3 * u**2 - 2 * u**3


def path(direction: str, params: dict, seed: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """A video's unit travel vector (tilted), its travel in pixels and its start's jitter (cx, cy) as
    ``(vector, travel, jitter)``; the video and its IMU recording share it."""
    rng = np.random.default_rng([seed, 1])
    bx, by = DIRECTIONS[direction]
    a = math.atan2(by, bx) + math.radians(params["tilt"])
    vector = np.array([math.cos(a), math.sin(a)])
    return vector, params["speed"] * (int(params["frames"]) - 1), tuple(rng.uniform(-4, 4, 2))


def motion(colour: str, shape: str, direction: str, params: dict, seed: int) -> np.ndarray:
    """``[T, H, W, 3]`` frames of the shape crossing the frame in ``direction`` along a tilted path."""
    rng = np.random.default_rng(seed)
    s, r, n = VIDEO_SIZE, params["radius"] * VIDEO_SIZE, int(params["frames"])
    base = _background(s, params, rng)
    vector, travel, jitter = path(direction, params, seed)
    frames = []
    for u in ease(np.linspace(0, 1, n)) - 0.5:
        x, y = s / 2 + jitter[0] + u * travel * vector[0], s / 2 + jitter[1] + u * travel * vector[1]
        frame = base.copy()
        frame[shape_mask(shape, s, x, y, r, hollow=0.6 if shape == "ring" else 0.0)] = COLOURS[colour]
        frames.append(frame)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def sound(kind: str, params: dict, seed: int) -> np.ndarray:
    """``[samples]`` or ``[samples, 2]`` float32 audio of the kind with the file's parameters."""
    rng = np.random.default_rng(seed)
    seconds = params["seconds"]
    n = int(AUDIO_RATE * seconds)
    t = np.arange(n) / AUDIO_RATE
    if kind == "noise":
        gate = np.floor(t / rng.uniform(0.15, 0.25)) % 2 == 0
        wave = np.clip(rng.standard_normal(n) / 3, -1, 1) * gate
    elif kind == "chirp":
        f0, f1 = rng.uniform(300, 400), rng.uniform(2400, 3000)
        wave = np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    else:
        f = rng.uniform(200, 240) if kind == "low" else rng.uniform(1700, 1900)
        wave = np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    wave = wave * params["loudness"] + np.clip(rng.standard_normal(n) / 3, -1, 1) * params["noise"]
    if params["stereo"]:
        b = params["balance"]
        wave = np.stack([wave * (1 - max(0.0, b)), wave * (1 + min(0.0, b))], axis=1)
    return np.clip(wave, -1, 1).astype(np.float32)


#: The file type :func:`write` gives each modality.
EXTENSIONS = {"image": "png", "video": "mp4", "audio": "wav"}


def write(modality: str, content: dict, params: dict, path: Path, seed: int) -> None:
    """Writes one file of the set atomically: PNG, MP4 (H.264) or WAV."""
    from modaverse.core.atomic import write_atomic
    from modaverse.media.writers import encode_video, encode_wav

    if modality == "image":
        from PIL import Image

        arr = picture([(content["colour"], content["shape"]), *map(tuple, content.get("others", ()))], params, seed)
        write_atomic(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
    elif modality == "video":
        encode_video(path, motion(content["colour"], content["shape"], content["motion"], params, seed), VIDEO_FPS, "mp4")
    else:
        encode_wav(path, sound(content["sound"], params, seed), AUDIO_RATE, "wav")
