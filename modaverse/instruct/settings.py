"""The settings of a generation run, kept free of heavy imports so the CLI can show their defaults.

Each field carries its command-line flag in its metadata (names, help, how the value is
read), so ``modaverse generate-instructions`` builds its parser from this dataclass and
its settings from the parsed flags: a setting is written once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from instructions import KINDS
from modaverse.core.values import fraction, positive_float, positive_int


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as (i, n), with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"{text!r} is not a shard i/n with 0 <= i < n (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def instruction_kind(text: str) -> str:
    if text not in KINDS:
        raise ValueError(f"unknown kind {text!r}; known: {', '.join(KINDS)}")
    return text


def dedup_threshold(text: str) -> float:
    value = fraction(text)
    if value == 0:
        raise ValueError("0 would make every record a duplicate")
    return value


def _flag(*names: str, help: str, read: Callable[[str], Any] | None = None, **argparse: Any) -> dict:
    """A field's command-line flag: its names, help, the function that reads one value, and argparse extras."""
    return {"flag": {"names": names, "help": help, "read": read, **argparse}}


@dataclass
class Settings:
    """Everything a run depends on; the CLI flags map one to one (``modaverse generate-instructions --help``)."""

    captions: Path = field(metadata=_flag(
        "--captions", read=Path, required=True, metavar="FILE",
        help='JSONL, one {"modality": "image|video|audio", "media": PATH, "caption": TEXT} per line; PATH '
        "relative to the file"))
    output: Path | None = field(metadata=_flag(
        "--output", "-o", read=Path, metavar="OUT.jsonl", help="records are appended here (required unless --dry-run)"))
    num: int = field(metadata=_flag(
        "--num", "-n", read=positive_int, required=True, metavar="N",
        help="records the output should hold (with --shard: all shards together)"))
    references: Path | None = field(default=None, metadata=_flag(
        "--references", metavar="FILE",
        help='JSONL, one {"capability": "text-to-image|...", "prompt": TEXT} per line: prompts in each '
        "generator's style (default: the shipped instructions/references.jsonl)"))
    seeds: Path | None = field(default=None, metadata=_flag(
        "--seeds", metavar="FILE", help="seed examples JSONL (default: the shipped instructions/seeds.jsonl)"))
    templates: Path | None = field(default=None, metadata=_flag(
        "--templates", metavar="DIR",
        help="folder with system.txt and one <kind>.txt per kind (default: the shipped templates)"))
    kinds: tuple[str, ...] = field(default=KINDS, metadata=_flag(
        "--kinds", read=instruction_kind, nargs="+", metavar="KIND",
        help=f"instruction kinds, drawn evenly: {', '.join(KINDS)} (default: all)"))
    # gpt-4o-mini has structured outputs, unlike gpt-3.5-turbo (the paper's ChatGPT)
    model: str = field(default="gpt-4o-mini", metadata=_flag("--model", "-m", metavar="NAME", help="chat model"))
    base_url: str | None = field(default=None, metadata=_flag(
        "--base-url", metavar="URL",
        help="OpenAI-compatible API, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI)"))
    concurrency: int = field(default=8, metadata=_flag(
        "--concurrency", "-j", read=positive_int, metavar="K", help="requests in flight at once"))
    seed: int = field(default=0, metadata=_flag(
        "--seed", read=int, metavar="S", help="what each request asks for is a function of the seed and its number"))
    structured_outputs: bool = field(default=True, metadata=_flag(
        "--no-structured-outputs", action="store_false",
        help="do not send a JSON-schema response_format (for servers without structured outputs); replies are "
        "validated all the same"))
    timeout: float = field(default=60.0, metadata=_flag(
        "--timeout", read=positive_float, metavar="S", help="seconds per attempt before it is retried"))
    max_retries: int = field(default=6, metadata=_flag(
        "--max-retries", read=int, metavar="N",
        help="retries per request on 429, 5xx and timeouts, honouring Retry-After"))
    max_requests_per_minute: float | None = field(default=None, metadata=_flag(
        "--max-requests-per-minute", read=positive_float, metavar="R",
        help="space requests evenly to stay under R per minute (default: no limit)"))
    shard: tuple[int, int] = field(default=(0, 1), metadata=_flag(
        "--shard", read=parse_shard, metavar="i/n", help="do shard i of n (0-based); shards never overlap"))
    temperature: float = field(default=1.0, metadata=_flag(
        "--temperature", read=float, metavar="T", help="sampling temperature"))
    max_tokens: int = field(default=1024, metadata=_flag(
        "--max-tokens", read=positive_int, metavar="N", help="reply length limit in tokens"))
    examples: int = field(default=3, metadata=_flag(
        "--examples", read=positive_int, metavar="K", help="seed examples per request"))
    references_per_request: int = field(default=5, metadata=_flag(
        "--references-per-request", read=positive_int, metavar="K", help="language references per output-side request"))
    dedup_threshold: float = field(default=0.8, metadata=_flag(
        "--dedup-threshold", read=dedup_threshold, metavar="F",
        help="word-3-gram Jaccard similarity from which a record about the same media counts as a near-duplicate"))
    price: tuple[float, float] | None = field(default=None, metadata=_flag(
        "--price", read=float, nargs=2, metavar=("IN", "OUT"),
        help="USD per million prompt and completion tokens, for the cost figure (default: OpenAI's list price for "
        "known models on OpenAI's API)"))
    check_media: bool = field(default=True, metadata=_flag(
        "--no-media-check", action="store_false",
        help="do not check that each captioned media file exists (e.g. it lives on another machine)"))
    #: None: the built-in text-to-image/-video/-audio (the CLI takes them from --config's zoo)
    capabilities: tuple[str, ...] | None = None

    def __post_init__(self):  # flags give lists; the run hashes and compares tuples
        for name in ("kinds", "price", "shard", "capabilities"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))


def defaults() -> dict[str, object]:
    """Each setting's default, for ``--help`` and argparse."""
    return {f.name: f.default for f in fields(Settings)}


def flags() -> list[tuple[str, dict, object]]:
    """(field name, flag metadata, default) for every setting that has a flag, in declaration order."""
    return [(f.name, f.metadata["flag"], f.default) for f in fields(Settings) if "flag" in f.metadata]
