"""A small generated instruction set that proves training works end to end, offline.

Coloured shapes as images and as moving videos, tones and noise bursts as audio, with
instructions of the paper's kinds: describe the input, answer a question about it, and
generate an image, a video or a sound from it (output-side alignment), plus text-only
generation requests and two-turn conversations. Every answer is determined by the
instruction and the input's content, so held-out accuracy measures whether the adaptors
carry the content into the LLM and the LLM learned the meta-response format.

Everything is seeded: the same ``--num`` and ``--seed`` give identical records, images and
audio; videos decode to the same frames up to the H.264 encoder's run-to-run variation.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modaverse.data.records import assistant, user

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
#: Chosen so that even a random tiny encoder separates them (a square and a circle look alike to it).
SHAPES = ("circle", "triangle", "ring")
#: Sound kind -> (description, is it a tone).
SOUNDS = {"low": ("a low hum", True), "high": ("a high beep", True), "noise": ("a burst of white noise", False),
          "chirp": ("a rising chirp", True)}

IMAGE_SIZE, VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = 96, 64, 24, 8
AUDIO_RATE, AUDIO_SECONDS = 16000, 2.0


@dataclass(frozen=True)
class Item:
    """One synthetic input and the facts its answers are made of."""

    modality: str  # image, video or audio
    colour: str = ""
    shape: str = ""
    sound: str = ""

    @property
    def picture(self) -> str:
        return f"a {self.colour} {self.shape} on a white background"

    @property
    def motion(self) -> str:
        return f"a {self.colour} {self.shape} moving across a white background"

    @property
    def noise(self) -> str:
        return SOUNDS[self.sound][0]

    @property
    def caption(self) -> str:
        """What a captioned dataset would say about the file (``captions.jsonl``)."""
        return {"image": self.picture, "video": self.motion}.get(self.modality) or self.noise


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


# -- instruction kinds: (instructions, answer) per modality ------------------------------------
Turn = tuple[str, dict]
Kind = Callable[[Item, random.Random], Turn]


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return rng.choice(options)


def describe(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        return _pick(rng, ("Describe <media>.", "What do you hear in <media>?")), assistant(_sentence(item.noise))
    if item.modality == "video":
        return (_pick(rng, ("Describe <media>.", "What happens in this video? <media>")),
                assistant(_sentence(f"a {item.colour} {item.shape} moves across a white background")))
    return _pick(rng, ("Describe <media>.", "What is in this picture? <media>")), assistant(_sentence(item.picture))


def question(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        answer = "It is a tone." if SOUNDS[item.sound][1] else "It is noise."
        return _pick(rng, ("Is <media> a tone or noise?", "<media> Is this a tone or noise?")), assistant(answer)
    if rng.random() < 0.5:
        return (_pick(rng, ("What colour is the shape in <media>?", "<media> Which colour is the shape?")),
                assistant(f"It is {item.colour}."))
    return _pick(rng, ("What shape is in <media>?", "<media> Name the shape.")), assistant(f"It is a {item.shape}.")


def generate_image(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        return (_pick(rng, ("Draw what you hear in <media>.", "<media> Make a picture of this sound.")),
                assistant("Here is a picture of the sound.", [("text-to-image", f"an illustration of {item.noise}")]))
    return (_pick(rng, ("Draw a picture like <media>.", "<media> Generate a similar image.")),
            assistant("Here is a similar picture.", [("text-to-image", f"{item.picture}, flat illustration")]))


def generate_video(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        return (_pick(rng, ("Make a video for <media>.", "<media> Generate a video of this sound.")),
                assistant("Here is a video of the sound.", [("text-to-video", f"a speaker playing {item.noise}")]))
    return (_pick(rng, ("Animate <media>.", "<media> Make a video of this shape moving.")),
            assistant("Here is a video of it moving.", [("text-to-video", item.motion)]))


def generate_audio(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        return (_pick(rng, ("Make a sound like <media>.", "<media> Generate similar audio.")),
                assistant("Here is a similar sound.", [("text-to-audio", f"{item.noise}, clean recording")]))
    return (_pick(rng, ("Make a sound for <media>.", "<media> Generate audio for this shape.")),
            assistant("Here is a sound for it.", [("text-to-audio", f"a soft chime for a {item.colour} {item.shape}")]))


KINDS: dict[str, Kind] = {"describe": describe, "question": question, "generate-image": generate_image,
                          "generate-video": generate_video, "generate-audio": generate_audio}

FOLLOW_UPS = {"generate-video": ("Now make a video of it.",), "generate-image": ("Now draw it.",),
              "generate-audio": ("Now make a sound for it.",)}


def text_only(item: Item, rng: random.Random) -> Turn:
    """Output-side alignment without inputs: a request names what to generate."""
    if item.modality == "audio":
        return f"Generate the sound of {item.noise}.", assistant(
            "Here is the sound.", [("text-to-audio", f"{item.noise}, clean recording")])
    if item.modality == "video":
        return f"Make a video of a {item.colour} {item.shape} moving.", assistant(
            "Here is the video.", [("text-to-video", item.motion)])
    return f"Draw a {item.colour} {item.shape}.", assistant(
        "Here is the picture.", [("text-to-image", f"{item.picture}, flat illustration")])


# -- media -------------------------------------------------------------------------------------
def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "ring":
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        return (d2 <= r * r) & (d2 >= (0.6 * r) ** 2)
    top, bottom = cy - r, cy + r * 0.8  # an upright triangle: width grows linearly downwards
    half = (y - top) / (bottom - top) * r
    return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half)


def _canvas(item: Item, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    img[_shape_mask(item.shape, size, cx, cy, r)] = COLOURS[item.colour]
    return img


def write_image(item: Item, path: Path, rng: random.Random) -> None:
    from PIL import Image

    from modaverse.core.atomic import write_atomic

    s = IMAGE_SIZE
    arr = _canvas(item, s, s / 2 + rng.uniform(-3, 3), s / 2 + rng.uniform(-3, 3), rng.uniform(0.32, 0.34) * s)
    write_atomic(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def write_video(item: Item, path: Path, rng: random.Random) -> None:
    from modaverse.media.writers import encode_video

    s, r = VIDEO_SIZE, rng.uniform(0.22, 0.3) * VIDEO_SIZE
    cy, direction = s / 2 + rng.uniform(-5, 5), rng.choice((-1, 1))
    xs = np.linspace(r, s - r, VIDEO_FRAMES)[::direction]
    frames = np.stack([_canvas(item, s, x, cy, r) for x in xs])
    encode_video(path, frames, VIDEO_FPS, "mp4")


def write_audio(item: Item, path: Path, rng: random.Random) -> None:
    from modaverse.media.writers import encode_wav

    n = int(AUDIO_RATE * AUDIO_SECONDS)
    t = np.arange(n) / AUDIO_RATE
    gen = np.random.default_rng(rng.randrange(2**32))
    if item.sound == "noise":
        gate = (np.floor(t / rng.uniform(0.15, 0.25)) % 2 == 0)
        wave = gen.standard_normal(n) * gate
    elif item.sound == "chirp":
        f0, f1 = rng.uniform(300, 400), rng.uniform(2400, 3000)
        wave = np.sin(2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * AUDIO_SECONDS)))
    else:
        f = rng.uniform(200, 240) if item.sound == "low" else rng.uniform(1700, 1900)
        wave = np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    encode_wav(path, (wave * rng.uniform(0.3, 0.8)).astype(np.float32), AUDIO_RATE, "wav")


WRITERS = {"image": (write_image, "png"), "video": (write_video, "mp4"), "audio": (write_audio, "wav")}


def _items(rng: random.Random, n: int) -> list[Item]:
    out = []
    for i in range(n):
        modality = ("image", "video", "audio")[i % 3]
        if modality == "audio":
            out.append(Item("audio", sound=rng.choice(list(SOUNDS))))
        else:
            out.append(Item(modality, colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES)))
    return out


def _records(item: Item, media: str, rng: random.Random, prefix: str, count: int) -> list[dict]:
    """``count`` conversations about one input, each of a different kind."""
    kinds = rng.sample(list(KINDS), k=min(count, len(KINDS)))
    out = []
    for j, kind in enumerate(kinds):
        text, answer = KINDS[kind](item, rng)
        messages = [user(text, media), answer]
        roll = rng.random()
        if kind in ("describe", "question") and roll < 0.15:  # a second turn that refers back to the input
            follow = rng.choice(list(FOLLOW_UPS))
            _, second = KINDS[follow](item, rng)
            messages += [user(FOLLOW_UPS[follow][0]), second]
        elif roll > 0.75:  # output-side alignment with no input at all
            text, answer = text_only(item, rng)
            messages = [user(text), answer]
        out.append({"id": f"{prefix}-{j}", "messages": messages, "source": "synth"})
    return out


def synthesize(out_dir: str | Path, num: int = 1200, seed: int = 0, test_fraction: float = 0.2,
               per_input: int = 1, on_progress: Callable[[int], None] | None = None) -> tuple[Path, Path]:
    """Writes media under ``out_dir/media`` and ``train.jsonl`` / ``test.jsonl``; returns both paths.

    ``captions.jsonl`` captions the training inputs, the form ``generate-instructions`` reads.

    Test records use inputs of their own (new positions, sizes, pitches and noise), never a
    training file, so the held-out score is about unseen inputs. ``per_input`` conversations
    (of different kinds) share each input file.
    """
    from modaverse.core.atomic import write_text_atomic
    from modaverse.data.records import parse_record, record_line

    out_dir = Path(out_dir)
    (out_dir / "media").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_item = max(1, min(per_input, len(KINDS)))
    n_items = math.ceil(num / per_item)
    items = _items(rng, n_items)
    n_test_items = max(1, round(n_items * test_fraction)) if num > 1 else 0
    splits: dict[str, list[str]] = {"train": [], "test": []}
    captions = []
    made = 0
    for i, item in enumerate(items):
        write, ext = WRITERS[item.modality]
        name = f"media/{item.modality}-{i:05d}.{ext}"
        write(item, out_dir / name, rng)
        split = "test" if i >= n_items - n_test_items else "train"
        if split == "train":
            captions.append(json.dumps({"modality": item.modality, "media": name, "caption": item.caption}))
        for rec in _records(item, name, rng, f"synth-{i:05d}", min(per_item, num - made)):
            splits[split].append(record_line(parse_record(rec)))
            made += 1
        if on_progress:
            on_progress(1)
    write_text_atomic(out_dir / "captions.jsonl", "".join(line + "\n" for line in captions))
    paths = []
    for split, lines in splits.items():
        path = out_dir / f"{split}.jsonl"
        write_text_atomic(path, "".join(line + "\n" for line in lines))
        paths.append(path)
    return paths[0], paths[1]


def corpus() -> list[str]:
    """Every phrase the synthetic set uses, for training the tiny in-code tokenizer."""
    rng = random.Random(0)
    items = [Item("audio", sound=k) for k in SOUNDS] + [
        Item(m, colour=c, shape=s) for m in ("image", "video") for c in COLOURS for s in SHAPES]
    texts = []
    for item in items:
        for kind in (*KINDS.values(), text_only):
            for _ in range(2):
                text, answer = kind(item, rng)
                texts += [text, json.dumps(answer["meta_response"], separators=(",", ":"))]
    return texts + [f[0] for f in FOLLOW_UPS.values()]


def write_benchmark_set(out_dir: str | Path, modality: str, num: int = 6, seed: int = 0) -> Path:
    """A small dataset in ``modaverse eval run``'s layout: media plus ``annotations.jsonl``.

    Two captions per item (the synthetic caption and a shorter one), so caption metrics
    have several references, as COCO, AudioCaps and MSR-VTT do.
    """
    from modaverse.core.atomic import write_text_atomic

    out_dir = Path(out_dir)
    (out_dir / modality).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    write, ext = WRITERS[modality]
    lines = []
    for i, item in enumerate(_items(rng, num * 3)[("image", "video", "audio").index(modality)::3]):
        name = f"{modality}/{i:05d}.{ext}"
        write(item, out_dir / name, rng)
        short = f"the sound of {item.noise}" if modality == "audio" else f"a {item.colour} {item.shape}"
        lines.append(json.dumps({"id": f"{modality}-{i:05d}", "file": name, "captions": [item.caption, short]}))
    write_text_atomic(out_dir / "annotations.jsonl", "".join(line + "\n" for line in lines))
    return out_dir
