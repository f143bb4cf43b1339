"""Training records: JSONL conversations with media references and meta-response targets.

One JSON object per line (``modaverse data schema`` prints the JSON Schema, generated from
these models)::

    {"id": "synth-00001",
     "messages": [
       {"role": "user", "text": "Describe <media>.", "media": [{"path": "media/a.png"}]},
       {"role": "assistant", "meta_response": {"text": "A red circle.", "invocations": []}}]}

Media paths are relative to the JSONL file's folder (absolute paths are kept), so a data
folder can be moved as a whole. A user message may hold any number and mix of inputs;
``<media>`` placeholders say where each goes, otherwise they precede the text. Messages
alternate user/assistant and end with an assistant message; every assistant message is a
training target. The research release kept one modality per kind and one target per record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from modaverse.core.errors import ModaverseError
from modaverse.core.jsonl import numbered_lines
from modaverse.core.modality import PLACEHOLDER, Modality
from modaverse.core.strict import Strict, reason
from modaverse.meta import schema as meta


class RecordError(ModaverseError):
    """A record that cannot be used; the message names the file, the line and the reason."""


class MediaRef(Strict):
    path: str = Field(min_length=1, description="file path, relative to the JSONL file's folder")
    modality: Modality | None = Field(None, description="null = detected from the file")


class UserMessage(Strict):
    role: Literal["user"]
    text: str = Field("", description=f"the instruction; {PLACEHOLDER} marks where each input goes")
    media: list[MediaRef] = Field(default_factory=list, description="inputs of this message, in order")

    @model_validator(mode="after")
    def _placeholders(self) -> UserMessage:
        holes = self.text.count(PLACEHOLDER)
        if holes and holes != len(self.media):
            raise ValueError(f"{holes} {PLACEHOLDER} placeholder(s) but {len(self.media)} media file(s)")
        if not self.text.strip() and not self.media:
            raise ValueError("a user message needs text, media, or both")
        return self


class AssistantMessage(Strict):
    role: Literal["assistant"]
    meta_response: meta.MetaResponse = Field(description="the target: reply text plus invocations")


Message = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class Record(Strict):
    """One training conversation."""

    id: str | None = Field(None, description="any identifier, reported with errors")
    messages: list[Message] = Field(min_length=2, description="alternating user/assistant, ending with assistant")
    source: str | None = Field(None, description="where the record came from (importer, generator)")

    @model_validator(mode="after")
    def _alternate(self) -> Record:
        for i, m in enumerate(self.messages):
            want = "user" if i % 2 == 0 else "assistant"
            if m.role != want:
                raise ValueError(f"messages[{i}] is {m.role!r}; messages alternate user, assistant, ...")
        if self.messages[-1].role != "assistant":
            raise ValueError("the last message must be the assistant's (the training target)")
        return self

    def media(self) -> list[MediaRef]:
        return [r for m in self.messages if m.role == "user" for r in m.media]


def record_schema() -> dict:
    """JSON Schema of one JSONL line."""
    return Record.model_json_schema()


def parse_record(obj: object, caps: Iterable[str] = meta.BUILTIN_CAPABILITIES) -> Record:
    """Validates one decoded JSON value; the error message says which field is wrong and why."""
    try:
        return Record.model_validate(obj, context={"capabilities": tuple(caps)})
    except ValidationError as e:
        raise RecordError(reason(e)) from None


@dataclass(frozen=True)
class Line:
    """One JSONL line: its number and either the record or why it is unusable."""

    number: int
    record: Record | None
    error: str | None = None


def read_lines(path: str | Path, caps: Iterable[str] = meta.BUILTIN_CAPABILITIES) -> Iterator[Line]:
    """Every non-blank line of a JSONL file, validated; bad lines are yielded with their reason."""
    caps = tuple(caps)
    for number, text in numbered_lines(path, RecordError):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Line(number, None, f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        try:
            yield Line(number, parse_record(obj, caps))
        except RecordError as e:
            yield Line(number, None, str(e))


def read_records(path: str | Path, caps: Iterable[str] = meta.BUILTIN_CAPABILITIES) -> list[Record]:
    """All records of a file; the first bad line is an error naming the file and line."""
    out = []
    for line in read_lines(path, caps):
        if line.error:
            raise RecordError(f"{path}:{line.number}: {line.error} (check the file with `modaverse data validate`)")
        out.append(line.record)
    return out


def media_path(ref: MediaRef, data_file: str | Path) -> Path:
    """A media reference as a path: relative ones are relative to the JSONL file's folder."""
    p = Path(ref.path).expanduser()
    return p if p.is_absolute() else Path(data_file).parent / p


def record_dict(record: Record) -> dict:
    """A record as plain data in its JSONL form (unset optional fields left out)."""
    messages = []
    for m in record.messages:
        if m.role == "assistant":
            messages.append({"role": "assistant", "meta_response": m.meta_response.as_dict()})
        else:
            media = [{"path": r.path, **({"modality": r.modality} if r.modality else {})} for r in m.media]
            messages.append({"role": "user", "text": m.text, "media": media})
    doc = {"id": record.id, "messages": messages, "source": record.source}
    return {k: v for k, v in doc.items() if v is not None}


def record_line(record: Record) -> str:
    """One compact JSONL line."""
    return json.dumps(record_dict(record), ensure_ascii=False, separators=(",", ":"))


def user(text: str, *media: str | tuple[str, str]) -> dict:
    """A user message as plain data: ``media`` items are paths or (path, modality) pairs."""
    refs = [{"path": m} if isinstance(m, str) else {"path": m[0], "modality": m[1]} for m in media]
    return {"role": "user", "text": text, "media": refs}


def assistant(text: str = "", invocations: Iterable[tuple[str, str]] = ()) -> dict:
    """An assistant message as plain data: ``invocations`` are (capability, prompt) pairs."""
    calls = [{"capability": c, "prompt": p} for c, p in invocations]
    return {"role": "assistant", "meta_response": {"text": text, "invocations": calls}}
