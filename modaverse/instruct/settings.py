"""The settings of a generation run, kept free of heavy imports so the CLI can show their defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from instructions import KINDS


@dataclass
class Settings:
    """Everything a run depends on; the CLI flags map one to one (``modaverse generate-instructions --help``)."""

    captions: Path
    output: Path | None
    num: int
    references: Path | None = None  # None: the shipped instructions/references.jsonl
    seeds: Path | None = None  # None: the shipped instructions/seeds.jsonl
    templates: Path | None = None  # None: the shipped instructions/templates/
    kinds: tuple[str, ...] = KINDS
    model: str = "gpt-4o-mini"  # has structured outputs, unlike gpt-3.5-turbo (the paper's ChatGPT)
    base_url: str | None = None  # None: OPENAI_BASE_URL, else OpenAI's API
    concurrency: int = 8
    seed: int = 0
    structured_outputs: bool = True
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 6
    max_requests_per_minute: float | None = None
    shard: tuple[int, int] = (0, 1)
    temperature: float = 1.0
    max_tokens: int = 1024
    examples: int = 3  # seed examples per request
    references_per_request: int = 5
    dedup_threshold: float = 0.8
    price: tuple[float, float] | None = None  # USD per 1M prompt / completion tokens
    check_media: bool = True
    capabilities: tuple[str, ...] | None = None  # None: the built-in text-to-image/-video/-audio


def defaults() -> dict[str, object]:
    """Each setting's default, for ``--help`` and argparse."""
    return {f.name: f.default for f in fields(Settings)}


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as (i, n), with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"{text!r} is not a shard i/n with 0 <= i < n (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))
