"""What a generation request is made of (paper section 3.3), read and checked before any request.

- *candidate descriptions*: captions of real media files (``--captions``), which stand in
  for the files the generated instruction will be paired with;
- *language references*: prompts in each generator's own style (``--references``);
- *seed examples*: hand-written instruction/response pairs (``--seeds``);
- *templates*: the system prompt and one user prompt per instruction kind (``--templates``).

Every file is validated line by line up front, so a typo costs an error naming the file and
line, not a thousand paid requests.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from instructions import KINDS
from instructions import ROOT as SHIPPED
from modaverse.core.errors import ModaverseError
from modaverse.core.jsonl import numbered_lines
from modaverse.core.modality import Modality
from modaverse.core.strict import Strict, reason
from modaverse.meta import schema as meta

Kind = Literal[KINDS]  # type: ignore[valid-type]

#: The placeholders each template may use; any other ``$name`` is an error.
PLACEHOLDERS = {"system": {"capabilities"},
                "input-side": {"inputs", "examples"},
                "output-side": {"inputs", "examples", "references", "target"},
                "reasoning": {"inputs", "examples"}}


class SourceError(ModaverseError):
    """A captions, references, seeds or template file that cannot be used; names the file and line."""


_ONE_LINE = meta.PROMPT_PATTERN


class Caption(Strict):
    """A candidate description: a media file and what it shows or sounds like."""

    modality: Modality
    media: str = Field(min_length=1, description="path relative to the captions file's folder")
    caption: str = Field(min_length=1, max_length=1000, pattern=_ONE_LINE)


class Reference(Strict):
    """A language reference: one prompt from a generator's training data."""

    capability: str
    prompt: str = Field(min_length=1, max_length=meta.MAX_PROMPT_CHARS, pattern=_ONE_LINE)

    @field_validator("capability")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        caps = (info.context or {}).get("capabilities", meta.BUILTIN_CAPABILITIES)
        if v not in caps:
            raise ValueError(f"unknown capability {v!r}; known: {', '.join(caps)}")
        return v


class SeedInput(Strict):
    modality: Modality
    caption: str = Field(min_length=1, pattern=_ONE_LINE)


class Seed(Strict):
    """A hand-written example pair; its inputs are captions, as in the requests it appears in."""

    kind: Kind
    inputs: list[SeedInput] = Field(default_factory=list)
    instruction: str = Field(min_length=1, max_length=meta.MAX_TEXT_CHARS)
    response: meta.MetaResponse

    @model_validator(mode="after")
    def _fits_kind(self) -> Seed:
        problem = kind_problem(self.kind, self.response, None, len(self.inputs))
        if problem:
            raise ValueError(problem)
        return self

    def outputs(self) -> set[str]:
        """``text`` and/or the capabilities called."""
        return {inv.capability for inv in self.response.invocations} or {"text"}


def kind_problem(kind: str, response: meta.MetaResponse, target: str | None, n_inputs: int,
                 noun: str = "example") -> str | None:
    """Why a response does not fit its instruction kind, or None.

    Shared by seed validation and reply checking, so the examples shown to the API obey the
    same rules its replies are held to.
    """
    calls = [inv.capability for inv in response.invocations]
    if kind == "output-side":
        if not calls:
            return f"an output-side {noun} must call a generator"
        if target is not None and target not in calls:
            return f"an output-side {noun} for {target} must call {target} (it calls {', '.join(calls)})"
        return None
    if calls:
        return f"a {kind} {noun} answers in text only (it calls {', '.join(calls)})"
    if not response.text.strip():
        return f"a {kind} {noun} needs a text answer"
    if kind == "input-side" and n_inputs == 0:
        return f"an input-side {noun} needs at least one input"
    return None


M = TypeVar("M", bound=BaseModel)


def _read(path: Path, model: type[M], what: str, context: dict | None = None) -> list[M]:
    out = []
    for number, text in numbered_lines(path, SourceError, what):
        try:
            out.append(model.model_validate(json.loads(text), context=context))
        except json.JSONDecodeError as e:
            raise SourceError(f"{path}:{number}: invalid JSON ({e.msg} at column {e.colno})") from None
        except ValidationError as e:
            raise SourceError(f"{path}:{number}: {reason(e)}") from None
    if not out:
        raise SourceError(f"{path}: no {what} in the file")
    return out


def load_captions(path: str | Path, check_media: bool = True) -> list[Caption]:
    """Captions with their media as absolute paths; a missing file is an error naming its line."""
    path = Path(path)
    captions = _read(path, Caption, "captions")
    out = []
    for number, c in enumerate(captions, 1):
        media = Path(c.media).expanduser()
        media = (media if media.is_absolute() else path.parent / media).resolve()
        if check_media and not media.is_file():
            raise SourceError(f"{path}: caption {number} ({c.media}): no such media file "
                              "(paths are relative to the captions file's folder)")
        out.append(c.model_copy(update={"media": str(media)}))
    return out


def load_references(path: str | Path | None, caps: Iterable[str] = meta.BUILTIN_CAPABILITIES) -> list[Reference]:
    return _read(Path(path or SHIPPED / "references.jsonl"), Reference, "references",
                 {"capabilities": tuple(caps)})


def load_seeds(path: str | Path | None, caps: Iterable[str] = meta.BUILTIN_CAPABILITIES) -> list[Seed]:
    return _read(Path(path or SHIPPED / "seeds.jsonl"), Seed, "seeds", {"capabilities": tuple(caps)})


@dataclass(frozen=True)
class Templates:
    """The system prompt and one user-prompt template per kind."""

    system: string.Template
    kinds: dict[str, string.Template]


def load_templates(folder: str | Path | None = None) -> Templates:
    """``system.txt`` and ``<kind>.txt`` from a folder; unknown placeholders are an error."""
    folder = Path(folder or SHIPPED / "templates")
    found = {}
    for name, allowed in PLACEHOLDERS.items():
        file = folder / f"{name}.txt"
        try:
            template = string.Template(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SourceError(f"{file}: no such template (a templates folder holds "
                              f"{', '.join(f'{n}.txt' for n in PLACEHOLDERS)})") from None
        if not template.is_valid():
            raise SourceError(f"{file}: a '$' that starts no placeholder (write '$$' for a dollar sign)")
        unknown = set(template.get_identifiers()) - allowed
        if unknown:
            raise SourceError(f"{file}: unknown placeholder ${sorted(unknown)[0]}; "
                              f"this template may use {', '.join('$' + a for a in sorted(allowed))}")
        found[name] = template
    system = found.pop("system")
    return Templates(system, found)
