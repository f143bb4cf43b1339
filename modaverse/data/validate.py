"""``modaverse data validate``: every problem of a training file, with its line number.

Three kinds of problem, each reported once per line:

- ``invalid``: not JSON, not a record, or a meta-response that does not validate (unknown
  capability, multi-line prompt, ...);
- ``media``: a referenced file is missing, is not the modality it claims, or does not decode
  with the loaders training uses (a truncated PNG, a WAV labelled ``image``); ``decode=False``
  checks only existence, extension and file signature;
- ``too long``: after tokenisation with the config's tokenizer and template, even the last
  exchange does not fit ``train.max_length`` (earlier turns would be trimmed, which is fine).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modaverse.config import Config
from modaverse.core.errors import MediaError
from modaverse.data.records import media_path, read_lines
from modaverse.meta import schema as meta


@dataclass(frozen=True)
class Problem:
    line: int
    kind: str  # invalid, media, too long
    reason: str


def prompt_builder(config: Config, tok):
    """The training prompt builder over the LLM's tokenizer ``tok`` (no model weights are loaded)."""
    from modaverse.data.conversation import training_builder
    from modaverse.llm.prompt import marker_tokens
    from modaverse.llm.source import resolve

    source = resolve(config.llm.model) if config.llm.model is not None else None
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.add_tokens(marker_tokens(config.encoder.modalities, config.prompt.compose), special_tokens=True)
    model_max = (config.llm.arch or {}).get("max_position_embeddings")
    if source is not None:
        from transformers import AutoConfig

        model_max = getattr(AutoConfig.from_pretrained(source).get_text_config(), "max_position_embeddings", None)
    return training_builder(config, tok, model_max)


def problems(path: str | os.PathLike, config: Config, tokenizer, decode: bool = True) -> Iterator[Problem | int]:
    """Yields each problem, and the number of each good line (for counting)."""
    from modaverse.data.conversation import messages, tokenize
    from modaverse.llm.prompt import PromptError
    from modaverse.media import detect_modality, load_media
    from modaverse.media.sniff import check_claim

    builder = prompt_builder(config, tokenizer)
    caps = meta.capabilities(config.zoo)
    decoded: set[Path] = set()
    for line in read_lines(path, caps):
        if line.error:
            yield Problem(line.number, "invalid", line.error)
            continue
        mods, bad = [], None
        for ref in line.record.media():
            p = media_path(ref, path)
            if not p.is_file():
                bad = f"{ref.path}: no such file"
                break
            try:  # a labelled file only needs its content to match its extension
                if ref.modality:
                    check_claim(p, ref.modality)
                mods.append(ref.modality or detect_modality(p))
                if decode and p not in decoded:  # what training will do with it, once per file
                    load_media(p, mods[-1], config.media)
                    decoded.add(p)
            except MediaError as e:
                bad = f"{ref.path}: {e.reason}"
                break
        if bad:
            yield Problem(line.number, "media", bad)
            continue
        try:
            tokenize(builder, messages(line.record, mods))
        except PromptError as e:
            yield Problem(line.number, "too long", str(e))
            continue
        yield line.number


def report(path: str | os.PathLike, config: Config, tokenizer, limit: int = 50,
           decode: bool = True) -> tuple[list[str], Counter, int]:
    """Report lines (``FILE:LINE: kind: reason``), counts per kind, and the number of good records.

    ``tokenizer`` is the LLM's (the caller picks it: a checkpoint's, the model's, the tiny kit's).
    """
    lines, counts, good = [], Counter(), 0
    for item in problems(path, config, tokenizer, decode):
        if isinstance(item, int):
            good += 1
            continue
        counts[item.kind] += 1
        if len(lines) < limit:
            lines.append(f"{Path(path)}:{item.line}: {item.kind}: {item.reason}")
    return lines, counts, good
