"""``modaverse eval roundtrip``: does a render show what its prompt named, and does content survive the loop?

For each capability of the config's zoo that the synthetic world has words for, every caption of
its vocabulary is rendered ``samples`` times (seeds 0..N-1) through the zoo, as the assistant would
render it (files written and read back), and each render is judged twice: by the pixel rules of
:mod:`.judges` and by the bound encoder (:mod:`.encoder_judge`). Both judges score real samples of
the world beside it, so a judge's own error is never mistaken for the generator's. :func:`loop` closes the circle through the assistant itself: a held-out picture is
drawn again ("Draw a picture like <media>.") and the drawing described ("Describe <media>.").
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modaverse.config import Config
from modaverse.core.errors import ModaverseError
from modaverse.data import samples, scenes
from modaverse.evaluation import judges

REAL = 100  # real samples each judge scores


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_video(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as f:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in f.decode(video=0)])


def read_audio(path: Path) -> np.ndarray:
    import soundfile

    wave, _ = soundfile.read(str(path), dtype="float32")
    return wave


def _image_scores(img: np.ndarray, content: dict, source: np.ndarray | None = None) -> dict[str, bool]:
    shown = judges.objects(img)
    first = shown[0] if len(shown) == 1 else (None, None)
    return {"colour": judges.colour(img) == content["colour"], "shape": first[1] == content["shape"]}


def _video_scores(frames: np.ndarray, content: dict, source: np.ndarray | None = None) -> dict[str, bool]:
    scores = _image_scores(frames[len(frames) // 2], content)  # colour and shape, on the middle frame
    if content.get("motion"):
        scores["direction"] = judges.direction(frames) == content["motion"]
    return scores


def _audio_scores(wave: np.ndarray, content: dict, source: np.ndarray | None = None) -> dict[str, bool]:
    return {"sound": judges.sound(wave) == content["sound"]}


def _edit_scores(img: np.ndarray, content: dict, source: np.ndarray) -> dict[str, bool]:
    applied = _image_scores(img, content)
    src = source if source.shape == img.shape else samples.resize(source, img.shape[0])
    return {"applied": applied["colour"] and applied["shape"], "kept": judges.kept(src, img) <= judges.KEPT_LEVELS}


def vocabulary(capability: str) -> list[tuple[str, dict]]:
    """(prompt, content) for every caption of the world a capability is asked for."""
    objs = [(c, s) for c in scenes.COLOURS for s in scenes.SHAPES]
    if capability == "text-to-image":
        return [(f"a {c} {s}, flat illustration", {"colour": c, "shape": s}) for c, s in objs]
    if capability == "text-to-video":
        return [(f"a {c} {s} moving {d}", {"colour": c, "shape": s, "motion": d})
                for c, s in objs for d in scenes.DIRECTIONS]
    if capability == "text-to-audio":
        return [(f"{text}, clean recording", {"sound": kind}) for kind, (text, _) in scenes.SOUNDS.items()]
    return []


def _real(draw: Callable[[int], object]) -> Callable[[int], tuple]:
    """Real samples of the world as a judge reads them: (array, content, source picture or None)."""
    return lambda i: (lambda s: (s.array, s.content, s.source))(draw(i))


#: capability -> (reader of its files, judge(array, content, source), real samples of the world).
CHECKS: dict[str, tuple[Callable, Callable, Callable[[int], tuple]]] = {
    "text-to-image": (read_image, _image_scores, _real(lambda i: samples.image(7, i, 32, pair_share=0.0))),
    "text-to-video": (read_video, _video_scores, _real(lambda i: samples.video(7, i, 32, 8))),
    "text-to-audio": (read_audio, _audio_scores, _real(lambda i: samples.audio(7, i, 1.0))),
    "image-editing": (read_image, _edit_scores, _real(lambda i: samples.edit(7, i, 32))),
}


def _summarise(rows: list[dict[str, bool]]) -> dict[str, float | None]:
    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: _share([r[k] for r in rows if k in r]) for k in keys}


def roundtrip(config: Config, capabilities: list[str] | None = None, n: int = 20,
              progress: bool | None = None) -> dict:
    """Per capability: each judge's accuracy on renders (overall and per caption) and on real samples."""
    from tqdm.auto import tqdm

    from modaverse.evaluation.encoder_judge import EncoderJudge
    from model_zoo.zoo import Zoo

    zoo = Zoo.from_config(config)
    wanted = capabilities or [c for c in zoo.capabilities if c in CHECKS]
    for capability in wanted:
        if capability not in CHECKS:
            raise ModaverseError(f"eval roundtrip: the synthetic world has no vocabulary for {capability!r}; "
                                 f"choose from {', '.join(CHECKS)}")
    encoder = EncoderJudge(config)
    report: dict = {}
    for capability in wanted:
        read, judge, real = CHECKS[capability]
        reals = [real(i) for i in range(REAL)]
        truth = [judge(*r) for r in reals]
        jobs = _jobs(capability, n)
        per_caption, rows, seconds, files_judged = defaultdict(list), [], [], []
        with tempfile.TemporaryDirectory(prefix="modaverse-roundtrip-") as tmp:
            bar = tqdm(jobs, desc=capability, disable=None if progress is None else not progress)
            for k, (prompt, content, source, seed) in enumerate(bar):
                inputs = []
                if source is not None:
                    inputs = [_as_input(source, Path(tmp) / f"source-{k}.png", config)]
                t = time.perf_counter()
                files = zoo.render(capability, prompt, {"seed": seed}, Path(tmp) / str(k), inputs)
                seconds.append(time.perf_counter() - t)
                scores = judge(read(files[0]), content, source)
                rows.append(scores)
                per_caption[prompt].append(scores)
                files_judged.append(files[0])
            zoo.unload_all()
            report[capability] = {
                "renders": len(rows), "samples_per_caption": n,
                "render_seconds_median": round(float(np.median(seconds)), 3),
                "renders_judged": _summarise(rows), "real_samples_judged": _summarise(truth),
                "per_caption": {p: _summarise(r) for p, r in per_caption.items()},
            }
            if not encoder.available:
                report[capability]["note"] = "no encoder judge: the config's text tower has no trained tokenizer"
            else:  # the second judge, on the same files and the same real samples
                contents = [content for _, content, _, _ in jobs]
                report[capability]["renders_encoder_judged"] = _summarise(encoder(capability, files_judged, contents))
                report[capability]["real_samples_encoder_judged"] = _summarise(
                    encoder.real(capability, [a for a, _, _ in reals], [c for _, c, _ in reals]))
    return report


def _jobs(capability: str, n: int) -> list[tuple[str, dict, np.ndarray | None, int]]:
    if capability == "image-editing":  # held-out pictures (seed 11) and their instructions
        jobs = []
        for i in range(n * 12):
            s = samples.edit(11, i, 32)
            jobs.append((s.caption, s.content, s.source, i % n))
        return jobs
    return [(prompt, content, None, seed) for prompt, content in vocabulary(capability) for seed in range(n)]


def _as_input(picture: np.ndarray, path: Path, config: Config):
    from PIL import Image

    from modaverse.media import load_media

    Image.fromarray(picture).save(path)
    return load_media(str(path), None, config.media)


def _named(text: str, words) -> str | None:
    found = [w for w in words if w in text.lower()]
    return found[0] if len(found) == 1 else None


def loop(config: Config, n: int = 40, progress: bool | None = None) -> dict:
    """The whole loop on held-out pictures: "Draw a picture like <media>." renders a picture through the
    assistant and its zoo, then "Describe <media>." on that render; does the colour, and the shape, survive?"""
    from PIL import Image
    from tqdm.auto import tqdm

    from modaverse.pipeline.assistant import ModaVerse

    pipe = ModaVerse.from_config(config)
    kept: dict[str, list[bool]] = {"colour": [], "shape": [], "drawn": []}
    with tempfile.TemporaryDirectory(prefix="modaverse-loop-") as tmp:
        for i in tqdm(range(n), desc="describe -> draw -> describe", disable=None if progress is None else not progress):
            s = samples.image(13, i, scenes.IMAGE_SIZE, pair_share=0.0)
            source = Path(tmp) / f"held-out-{i}.png"
            Image.fromarray(s.array).save(source)
            drawn = pipe("Draw a picture like <media>.", [source], output_dir=Path(tmp) / f"draw-{i}")
            pictures = [p for p in drawn.outputs if p.suffix == ".png"]
            kept["drawn"].append(bool(pictures))
            if not pictures:
                kept["colour"].append(False)
                kept["shape"].append(False)
                continue
            said = pipe("Describe <media>.", [pictures[0]]).text
            kept["colour"].append(_named(said, scenes.COLOURS) == s.content["colour"])
            kept["shape"].append(_named(said, scenes.SHAPES) == s.content["shape"])
    pipe.zoo.unload_all()
    return {"pictures": n, **{k: _share(v) for k, v in kept.items()}}
