"""Captioned samples of the synthetic world, drawn on the fly: what the tiny generators learn to render.

The generators learn the same world the assistant learns to describe (:mod:`modaverse.data.scenes`),
from the training ranges only, and with the prompts the assistant writes for them
(:mod:`modaverse.data.synth`: "a red ring and a blue circle, flat illustration", "a red circle
moving", "a rising chirp, clean recording"). Every sample is a pure function of ``(seed, index)``,
so a resumed run draws exactly the batches the uninterrupted one would have, and no data set has to
be written first: the world is unbounded, so nothing is memorised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from modaverse.data import scenes

#: What an edit may ask, and how the assistant phrases it ("image-editing" prompts).
EDITS = ("colour", "shape")


@dataclass(frozen=True)
class Sample:
    caption: str  # the prompt a generator is given
    content: dict  # what it shows: colour, shape, others, motion, sound (judges read it)
    array: np.ndarray  # [H, W, 3] uint8, [T, H, W, 3] uint8, or [samples] float32
    source: np.ndarray | None = None  # image editing: the picture the instruction applies to


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    """[..., H, W, 3] uint8 to ``size`` pixels a side (box filter: flat colours stay flat)."""
    from PIL import Image

    if arr.shape[-2] == size:
        return arr
    flat = arr.reshape(-1, *arr.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BOX)) for a in flat])
    return out.reshape(*arr.shape[:-3], size, size, 3)


def objects(rng: random.Random, pair_share: float) -> list[tuple[str, str]]:
    """One object, or two of different colours named in the order of :data:`scenes.COLOURS`."""
    colours = list(scenes.COLOURS)
    if rng.random() < pair_share:
        picked = sorted(rng.sample(colours, 2), key=colours.index)
        return [(c, rng.choice(scenes.SHAPES)) for c in picked]
    return [(rng.choice(colours), rng.choice(scenes.SHAPES))]


def named(objs: list[tuple[str, str]]) -> str:
    return " and ".join(f"a {colour} {shape}" for colour, shape in objs)


def image(seed: int, index: int, size: int, pair_share: float = 0.5) -> Sample:
    rng = _rng(seed, index)
    objs = objects(rng, pair_share)
    params = scenes.draw("image", rng, shifted=False)
    arr = resize(scenes.picture(objs, params, rng.randrange(2**31)), size)
    caption = named(objs) + rng.choice(("", ", flat illustration"))
    content = {"colour": objs[0][0], "shape": objs[0][1], **({"others": objs[1:]} if len(objs) > 1 else {})}
    return Sample(caption, content, arr)


def video(seed: int, index: int, size: int, frames: int) -> Sample:
    """``frames`` frames spread over the whole motion; the caption names the direction or not, as the
    assistant's prompts do ("a red circle moving")."""
    rng = _rng(seed, index)
    colour, shape = rng.choice(list(scenes.COLOURS)), rng.choice(scenes.SHAPES)
    direction = rng.choice(list(scenes.DIRECTIONS))
    params = scenes.draw("video", rng, shifted=False)
    clip = scenes.motion(colour, shape, direction, params, rng.randrange(2**31))
    pick = np.linspace(0, len(clip) - 1, frames).round().astype(int)
    caption = f"a {colour} {shape} moving" + (f" {direction}" if rng.random() < 0.7 else "")
    return Sample(caption, {"colour": colour, "shape": shape, "motion": direction}, resize(clip[pick], size))


def audio(seed: int, index: int, seconds: float, rate: int = scenes.AUDIO_RATE) -> Sample:
    """A mono sound of ``seconds`` (the synthetic kinds: hum, beep, noise bursts, chirp)."""
    rng = _rng(seed, index)
    kind = rng.choice(list(scenes.SOUNDS))
    params = {**scenes.draw("audio", rng, shifted=False), "seconds": seconds, "stereo": 0}
    wave = scenes.sound(kind, params, rng.randrange(2**31))
    if rate != scenes.AUDIO_RATE:
        raise ValueError(f"sample rate {rate}: the synthetic sounds are {scenes.AUDIO_RATE} Hz")
    caption = scenes.SOUNDS[kind][0] + rng.choice(("", ", clean recording"))
    return Sample(caption, {"sound": kind}, wave)


def edit(seed: int, index: int, size: int) -> Sample:
    """A one-object picture, an instruction that changes its colour or its shape, and the same
    picture (layout, background, clutter) with only that changed."""
    rng = _rng(seed, index)
    colour, shape = rng.choice(list(scenes.COLOURS)), rng.choice(scenes.SHAPES)
    params = scenes.draw("image", rng, shifted=False)
    layout_seed = rng.randrange(2**31)
    if rng.choice(EDITS) == "colour":
        new = (rng.choice([c for c in scenes.COLOURS if c != colour]), shape)
        caption = rng.choice(("make it {}", "turn it {}", "change the colour to {}")).format(new[0])
    else:
        new = (colour, rng.choice([s for s in scenes.SHAPES if s != shape]))
        caption = rng.choice(("make it a {}", "turn it into a {}", "change the shape to a {}")).format(new[1])
    before = resize(scenes.picture([(colour, shape)], params, layout_seed), size)
    after = resize(scenes.picture([new], params, layout_seed), size)
    return Sample(caption, {"colour": new[0], "shape": new[1], "before": {"colour": colour, "shape": shape}},
                  after, before)
