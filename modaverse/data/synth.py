"""A generated instruction set that measures what training learned, offline.

Coloured shapes as images and as moving videos, tones and noise bursts as audio, with
instructions of the paper's kinds: describe the input, answer a question about it, and
generate an image, a video or a sound from it (output-side alignment), plus text-only
generation requests and two-turn conversations. Every answer is determined by the
instruction and the input's content, so held-out accuracy measures whether the adaptors
carry the content into the LLM and the LLM learned the meta-response format.

Three splits (:mod:`modaverse.data.scenes` draws their media): ``train``, ``test`` (new
files from the training ranges: in distribution) and ``shifted`` (new files with parameters
outside them). Everything is seeded: the same arguments give identical records, images and
audio; videos decode to the same frames up to the H.264 encoder's run-to-run variation.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.data.records import assistant, user
from modaverse.data.scenes import COLOURS, DIRECTIONS, EXTENSIONS, SHAPES, SOUNDS, draw, write

SPLITS = ("train", "test", "shifted")
#: Changes whenever the same seed would draw other files: 3 added the sensor views and the videos' directions;
#: 4 narrowed the thermal views' ambient range and made half the pictures two-object ones.
SET_VERSION = 4


@dataclass(frozen=True)
class Item:
    """One synthetic input's content: the facts its answers are made of."""

    modality: str  # image, video or audio
    colour: str = ""
    shape: str = ""
    sound: str = ""
    others: tuple[tuple[str, str], ...] = ()  # a picture's further (colour, shape) objects
    direction: str = ""  # where a video's shape travels (scenes.DIRECTIONS)

    @property
    def objects(self) -> tuple[tuple[str, str], ...]:
        return ((self.colour, self.shape), *self.others)

    @property
    def picture(self) -> str:
        return " and ".join(f"a {colour} {shape}" for colour, shape in self.objects)

    @property
    def motion(self) -> str:
        return f"{self.picture} moving"

    @property
    def noise(self) -> str:
        return SOUNDS[self.sound][0]

    @property
    def caption(self) -> str:
        """What a captioned dataset would say about the file (``captions.jsonl``)."""
        return {"image": self.picture, "video": f"{self.motion} {self.direction}"}.get(self.modality) or self.noise

    @property
    def content(self) -> dict:
        if self.modality == "audio":
            return {"sound": self.sound}
        return {"colour": self.colour, "shape": self.shape, **({"others": self.others} if self.others else {}),
                **({"motion": self.direction} if self.direction else {})}


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
                assistant(_sentence(f"a {item.colour} {item.shape} moves across the frame")))
    return _pick(rng, ("Describe <media>.", "What is in this picture? <media>")), assistant(_sentence(item.picture))


def question(item: Item, rng: random.Random) -> Turn:
    if item.modality == "audio":
        answer = "It is a tone." if SOUNDS[item.sound][1] else "It is noise."
        return _pick(rng, ("Is <media> a tone or noise?", "<media> Is this a tone or noise?")), assistant(answer)
    if item.others:
        colours, shapes = zip(*item.objects, strict=True)
        if rng.random() < 0.5:
            return (_pick(rng, ("What colours are the shapes in <media>?", "<media> Which colours are the shapes?")),
                    assistant(f"They are {' and '.join(colours)}."))
        named = f"two {shapes[0]}s" if len(set(shapes)) == 1 else " and ".join(f"a {shape}" for shape in shapes)
        return _pick(rng, ("What shapes are in <media>?", "<media> Name the shapes.")), assistant(_sentence(named))
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
            assistant("Here is a sound for it.", [("text-to-audio", f"a soft chime for {item.picture}")]))


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
        return f"Make a video of {item.motion}.", assistant(
            "Here is the video.", [("text-to-video", item.motion)])
    return f"Draw {item.picture}.", assistant(
        "Here is the picture.", [("text-to-image", f"{item.picture}, flat illustration")])


#: The share of pictures with two objects (of different colours), named in the order of :data:`COLOURS`:
#: the answer depends on what is drawn, not on where, which a layout drawn at random could not teach.
#: Half: they are the hard case (a quarter left the tiny model naming 59% of them right, half 70%, on
#: the same 27 conversations; one-object pictures stayed at 100%).
PAIR_SHARE = 0.5


def _items(rng: random.Random, n: int) -> list[Item]:
    out = []
    for i in range(n):
        modality = ("image", "video", "audio")[i % 3]
        if modality == "audio":
            out.append(Item("audio", sound=rng.choice(list(SOUNDS))))
        elif modality == "image" and rng.random() < PAIR_SHARE:
            colours = sorted(rng.sample(list(COLOURS), 2), key=list(COLOURS).index)
            (c1, s1), second = [(c, rng.choice(SHAPES)) for c in colours]
            out.append(Item(modality, colour=c1, shape=s1, others=(second,)))
        else:
            direction = rng.choice(list(DIRECTIONS)) if modality == "video" else ""
            out.append(Item(modality, colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES), direction=direction))
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


def _write_item(item: Item, out_dir: Path, name: str, rng: random.Random, shifted: bool,
                views: bool = False) -> list[dict]:
    """Draws the file's parameters, writes it (and, with ``views``, the other sensors' views of the same
    scene), and returns their ``media.jsonl`` entries: the file's first, then each view with its ``pair``."""
    from modaverse.data.views import SOUND_OF, VIEWS, write_view

    params, seed = draw(item.modality, rng, shifted), rng.randrange(2**32)
    write(item.modality, item.content, params, out_dir / name, seed)
    entries = [{"media": name, "modality": item.modality, **item.content, "caption": item.caption, "params": params}]
    for view, (anchor, ext) in VIEWS.items() if views else ():
        if anchor != item.modality:
            continue
        stem = "soundtrack" if view == "audio" else view
        view_name = name.replace(f"/{item.modality}-", f"/{stem}-").rsplit(".", 1)[0] + f".{ext}"
        view_params = draw(view, rng, shifted)
        write_view(view, item.content, params, seed, view_params, out_dir / view_name, rng.randrange(2**32))
        rule = {"sound": SOUND_OF[item.colour]} if view == "audio" else {}
        entries.append({"media": view_name, "modality": view, "pair": name, **item.content, **rule,
                        "params": view_params})
    return entries


def synthesize(out_dir: str | Path, num: int = 6000, seed: int = 0, test_fraction: float = 0.1,
               shifted_fraction: float = 0.1, per_input: int = 1,
               on_progress: Callable[[int], None] | None = None, views: bool = True) -> dict[str, Path]:
    """Writes media under ``out_dir/media`` and one JSONL file per split; returns them by split name.

    ``test`` records use new files from the training ranges, ``shifted`` ones files whose
    parameters lie outside them (:mod:`modaverse.data.scenes`); no split shares a file.
    ``media.jsonl`` gives every file's split, content, caption and parameters, and with ``views`` the
    depth, thermal, IMU and audio views of each picture or video (:mod:`modaverse.data.views`), each
    naming its anchor under ``pair``: ``modaverse bind`` reads it. ``captions.jsonl`` captions the
    training inputs (the form ``generate-instructions`` reads). ``per_input`` conversations
    (of different kinds) share each input file.
    """
    from modaverse.core.atomic import write_text_atomic
    from modaverse.data.records import parse_record, record_line

    out_dir = Path(out_dir)
    per_item = max(1, min(per_input, len(KINDS)))
    n_items = math.ceil(num / per_item)
    sizes = {name: max(1, round(n_items * f)) if f > 0 and num > 1 else 0
             for name, f in (("shifted", shifted_fraction), ("test", test_fraction))}
    if sizes["shifted"] + sizes["test"] > n_items:  # each split held out gets one input at least
        raise ModaverseError(f"test fraction {test_fraction} and shifted fraction {shifted_fraction} hold out "
                             f"{sizes['test']} + {sizes['shifted']} inputs, but there are {n_items}: "
                             "lower them or raise the number of conversations")
    (out_dir / "media").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    items = _items(rng, n_items)
    first_test, first_shifted = n_items - sizes["test"] - sizes["shifted"], n_items - sizes["shifted"]
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    captions, manifest = [], []
    made = 0
    for i, item in enumerate(items):
        split = "shifted" if i >= first_shifted else "test" if i >= first_test else "train"
        name = f"media/{item.modality}-{i:05d}.{EXTENSIONS[item.modality]}"
        for entry in _write_item(item, out_dir, name, rng, split == "shifted", views):
            manifest.append(json.dumps({"split": split, "version": SET_VERSION, **entry}))
        if split == "train":
            captions.append(json.dumps({"modality": item.modality, "media": name, "caption": item.caption}))
        for rec in _records(item, name, rng, f"synth-{i:05d}", min(per_item, num - made)):
            lines[split].append(record_line(parse_record(rec)))
            made += 1
        if on_progress:
            on_progress(1)
    write_text_atomic(out_dir / "captions.jsonl", "".join(line + "\n" for line in captions))
    write_text_atomic(out_dir / "media.jsonl", "".join(line + "\n" for line in manifest))
    paths = {}
    for split in SPLITS:
        paths[split] = out_dir / f"{split}.jsonl"
        write_text_atomic(paths[split], "".join(line + "\n" for line in lines[split]))
    return paths


def corpus() -> list[str]:
    """Every phrase the synthetic set uses, for training the tiny in-code tokenizer."""
    rng = random.Random(0)
    items = [Item("audio", sound=k) for k in SOUNDS] + [
        Item(m, colour=c, shape=s) for m in ("image", "video") for c in COLOURS for s in SHAPES] + [
        Item("image", colour=c, shape=s, others=(("yellow", s),)) for c in ("red", "green", "blue") for s in SHAPES]
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
    lines = []
    for i, item in enumerate(_items(rng, num * 3)[("image", "video", "audio").index(modality)::3]):
        name = f"{modality}/{i:05d}.{EXTENSIONS[modality]}"
        _write_item(item, out_dir, name, rng, shifted=False)
        short = f"the sound of {item.noise}" if modality == "audio" else item.picture
        # the conversations' phrasing of a video (item.motion), not its caption's direction: what a profile learned to draw
        first = item.motion if modality == "video" else item.caption
        lines.append(json.dumps({"id": f"{modality}-{i:05d}", "file": name, "captions": [first, short]}))
    write_text_atomic(out_dir / "annotations.jsonl", "".join(line + "\n" for line in lines))
    return out_dir
