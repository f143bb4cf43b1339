"""The six benchmarks of the ModaVerse paper (Tables 2-7), as data.

Each names its task, the modality on the media side, the figures the paper reports and
how our metric maps onto the paper's column (coco-caption scores are 0-1; COCO and MSR-VTT
tables print them x100, AudioCaps as they are). ``modaverse eval list`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Column:
    """One column of the paper's table: its header, our metric key, the scale, the paper's figure."""

    header: str
    metric: str
    paper: str  # as printed, so our figure is shown to the same digits
    scale: float = 1.0
    higher_is_better: bool = True


@dataclass(frozen=True)
class Benchmark:
    name: str
    dataset: str
    task: Literal["caption", "generate"]
    modality: Literal["image", "video", "audio"]  # the input of a caption task, the output of a generate task
    capability: str | None  # the generator a generate task expects the model to call
    table: str
    instruction: str  # default request (config eval.instructions): <media> is the input, {caption} the caption
    columns: tuple[Column, ...]

    @property
    def title(self) -> str:
        arrow = f"{self.modality}-to-text" if self.task == "caption" else f"text-to-{self.modality}"
        return f"{self.dataset} {arrow} (ModaVerse {self.table})"


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("coco-captions", "COCO", "caption", "image", None, "Table 3", "Describe <media> in one sentence.", (
        Column("B@4", "BLEU-4", "43.9", 100), Column("METEOR", "METEOR", "31.8", 100), Column("CIDEr", "CIDEr-D", "151.4", 100))),
    Benchmark("coco-t2i", "COCO", "generate", "image", "text-to-image", "Table 2", "Generate an image of {caption}.", (
        Column("FID", "FID", "11.24", higher_is_better=False),)),
    Benchmark("audiocaps-a2t", "AudioCaps", "caption", "audio", None, "Table 5",
              "Describe the sound in <media> in one sentence.", (
        Column("SPIDEr", "SPIDEr", "0.494"), Column("CIDEr", "CIDEr-D", "0.792"))),
    Benchmark("audiocaps-t2a", "AudioCaps", "generate", "audio", "text-to-audio", "Table 4",
              "Generate the sound of {caption}.", (
        Column("FD", "FD", "23.40", higher_is_better=False), Column("IS", "IS", "8.22"))),
    Benchmark("msrvtt-v2t", "MSR-VTT", "caption", "video", None, "Table 7", "Describe <media> in one sentence.", (
        Column("B@4", "BLEU-4", "56.5", 100), Column("METEOR", "METEOR", "35.2", 100))),
    Benchmark("msrvtt-t2v", "MSR-VTT", "generate", "video", "text-to-video", "Table 6",
              "Generate a video of {caption}.", (
        Column("FID", "FID", "13.35", higher_is_better=False), Column("CLIPSIM", "CLIPSIM", "0.3014"))),
)}


def request(bench: Benchmark, instructions: dict[str, str]) -> str:
    """The request a benchmark sends: the config's ``eval.instructions.<name>``, else the benchmark's own."""
    return instructions.get(bench.name, bench.instruction)


def check_instructions(instructions: dict[str, str]) -> None:
    """``eval.instructions``: known benchmarks only, each request holding its placeholder once."""
    for name, text in instructions.items():
        if name not in BENCHMARKS:
            raise ValueError(f"eval.instructions.{name}: unknown benchmark; known: {', '.join(BENCHMARKS)}")
        need = "<media>" if BENCHMARKS[name].task == "caption" else "{caption}"
        if text.count(need) != 1:
            raise ValueError(f"eval.instructions.{name}: the request must contain {need} once")
