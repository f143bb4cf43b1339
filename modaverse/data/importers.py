"""Other projects' instruction files -> our JSONL records.

- ``official``: the ModaVerse release's training JSON, a list of ``{"instruction", "media":
  {"image"|"audio"|"video": relpath or "none"}, "meta_response": {"modality", "prompt"}}``;
  the single ``[TEXT]``/``[IMAGE]``/... target becomes a reply or one invocation.
- ``llava``: LLaVA conversation JSON, a list of ``{"id", "image", "conversations": [{"from":
  "human"|"gpt", "value"}]}``; ``<image>`` marks where the image goes.
- ``pandagpt``: PandaGPT's visual-instruction JSON, a list of ``{"image_name",
  "conversation": [...]}`` (``.jpg`` is appended to names without it, as PandaGPT does).

Media paths are resolved against ``media_root`` and rewritten relative to the output file,
so the result validates where it is written. A source item that cannot become a valid
record is skipped and reported with its index and reason; it never stops the import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.core.modality import PLACEHOLDER
from modaverse.data.records import Record, RecordError, assistant, parse_record, user
from modaverse.meta import schema as meta

#: The official release's target modality -> our capability (None: a text reply).
OFFICIAL_TARGETS = {"text": None, "image": "text-to-image", "video": "text-to-video", "audio": "text-to-audio"}
OFFICIAL_MEDIA_ORDER = ("image", "audio", "video")


def _media(path: str, root: Path, out_dir: Path, modality: str | None = None) -> dict:
    absolute = (root / path).resolve()
    ref = {"path": os.path.relpath(absolute, out_dir.resolve())}
    return {**ref, "modality": modality} if modality else ref


def from_official(item: dict, root: Path, out_dir: Path) -> dict:
    media = item.get("media") or {}
    unknown = set(media) - set(OFFICIAL_MEDIA_ORDER)
    if unknown:
        raise ValueError(f"unknown media kind {sorted(unknown)[0]!r}")
    refs = [_media(media[k], root, out_dir, k) for k in OFFICIAL_MEDIA_ORDER
            if isinstance(media.get(k), str) and media[k] not in ("", "none")]
    target = item.get("meta_response") or {}
    modality = str(target.get("modality", "")).lower().strip("[]")
    if modality not in OFFICIAL_TARGETS:
        raise ValueError(f"meta_response.modality {target.get('modality')!r} is not one of {', '.join(OFFICIAL_TARGETS)}")
    prompt = str(target.get("prompt", "")).strip()
    capability = OFFICIAL_TARGETS[modality]
    answer = assistant(prompt) if capability is None else assistant("", [(capability, prompt)])
    return {"messages": [{**user(str(item.get("instruction", ""))), "media": refs}, answer]}


def _conversation(turns: list, image: dict | None, token: str) -> list[dict]:
    messages = []
    for i, turn in enumerate(turns):
        who, text = turn.get("from"), str(turn.get("value", ""))
        if who in ("human", "user"):
            media = [image] if image is not None and not any(m["role"] == "user" for m in messages) else []
            if media and token in text:
                text = text.replace(token, PLACEHOLDER, 1).replace(token, "")
            messages.append({"role": "user", "text": text.strip(), "media": media})
        elif who in ("gpt", "assistant"):
            messages.append(assistant(text.strip()))
        else:
            raise ValueError(f"conversation[{i}].from is {who!r}; expected human or gpt")
    return messages


def from_llava(item: dict, root: Path, out_dir: Path) -> dict:
    image = _media(item["image"], root, out_dir, "image") if item.get("image") else None
    return {"id": str(item["id"]) if "id" in item else None,
            "messages": _conversation(item.get("conversations") or [], image, "<image>")}


def from_pandagpt(item: dict, root: Path, out_dir: Path) -> dict:
    name = str(item.get("image_name") or "")
    if not name:
        raise ValueError("image_name is missing")
    image = _media(name if name.endswith(".jpg") else name + ".jpg", root, out_dir, "image")
    return {"messages": _conversation(item.get("conversation") or [], image, "<image>")}


IMPORTERS: dict[str, Callable[[dict, Path, Path], dict]] = {
    "official": from_official, "llava": from_llava, "pandagpt": from_pandagpt}


def convert(kind: str, source: str | os.PathLike, output: str | os.PathLike,
            media_root: str | os.PathLike | None = None) -> Iterator[tuple[int, Record | None, str | None]]:
    """Yields ``(index, record, None)`` per converted item and ``(index, None, reason)`` per skipped one."""
    source, output = Path(source), Path(output)
    root = Path(media_root) if media_root else source.parent
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModaverseError(f"{source}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModaverseError(f"{source}: not JSON ({e})") from None
    if not isinstance(items, list):
        raise ModaverseError(f"{source}: expected a JSON list of {kind} items")
    convert_one = IMPORTERS[kind]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            yield i, None, "not a JSON object"
            continue
        try:
            doc = convert_one(item, root, output.parent)
            doc = {k: v for k, v in {**doc, "source": kind}.items() if v is not None}
            record = parse_record(doc, meta.BUILTIN_CAPABILITIES)
        except (ValueError, KeyError, TypeError, RecordError) as e:
            yield i, None, str(e).splitlines()[0]
            continue
        yield i, record, None
