"""The meta-response: what the LLM answers, as a validated JSON document.

ModaVerse's LLM does not render anything itself; it answers with a *meta-response* that
says what to reply and which text-to-x generators to call with which prompts. The research
code emits ``Modality: [IMAGE] Prompt: ...`` and parses it with regexes that crash when
``Prompt:`` is missing and allow one output per turn. Here it is a pydantic schema:

- a text reply plus zero or more invocations (several outputs per turn);
- every invocation names a capability from the configured set and a bounded prompt;
- optional render parameters are bounded so a model cannot ask for a 100k-step render;
- unknown keys are rejected, and no field is ever read as a file path, URL or Python
  object: a meta-response can only choose *what* to render, never *where* or *how*.

The same schema drives constrained decoding (:mod:`modaverse.meta.grammar`), so the LLM can
only emit documents that :func:`parse` accepts. The official release's format is still
read, for its checkpoints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from modaverse.core.errors import ModaverseError
from modaverse.core.strict import Strict, reason

#: Always available; a config's ``zoo:`` block can register more.
BUILTIN_CAPABILITIES: tuple[str, ...] = ("text-to-image", "text-to-video", "text-to-audio")

MAX_TEXT_CHARS = 2000
#: Generators read prompts through CLIP/T5 encoders of 77+ tokens; 400 characters covers that.
MAX_PROMPT_CHARS = 400
MAX_INVOCATIONS = 4

#: One line with at least one visible character; part of the JSON schema, so the grammar enforces it too.
PROMPT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"

#: The official ModaVerse flags and the capability each one meant.
LEGACY_FLAGS = {"IMAGE": "text-to-image", "VIDEO": "text-to-video", "AUDIO": "text-to-audio", "TEXT": None}


class MetaResponseError(ModaverseError):
    """Text that is not a valid meta-response; the message says why."""


class RenderParams(Strict):
    """Optional per-invocation overrides of a generator's defaults, each bounded."""

    seed: int = Field(None, ge=0, le=2**32 - 1, description="generator seed")
    steps: int = Field(None, ge=1, le=150, description="denoising steps")
    guidance: float = Field(None, ge=0, le=30, description="classifier-free guidance scale")
    width: int = Field(None, ge=32, le=2048, multiple_of=8, description="output width in pixels (32: the tiny trained generators)")
    height: int = Field(None, ge=32, le=2048, multiple_of=8, description="output height in pixels")
    frames: int = Field(None, ge=1, le=128, description="video frames")
    duration: float = Field(None, ge=0.5, le=60, description="audio length in seconds")

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


class Invocation(Strict):
    """One call of a zoo generator."""

    capability: str = Field(description="a configured capability, e.g. text-to-image")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=PROMPT_PATTERN,
                        description="prompt for the generator: one line, not blank")
    params: RenderParams = Field(default_factory=RenderParams, description="optional bounded overrides")

    @field_validator("capability")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        caps = (info.context or {}).get("capabilities", BUILTIN_CAPABILITIES)
        if v not in caps:
            raise ValueError(f"unknown capability {v!r}; known: {', '.join(caps)}")
        return v


class MetaResponse(Strict):
    """The LLM's answer: a reply for the user and the generators to call."""

    text: str = Field("", max_length=MAX_TEXT_CHARS, description="reply shown to the user")
    invocations: list[Invocation] = Field(default_factory=list, max_length=MAX_INVOCATIONS,
                                          description="generators to call, in order")

    def to_json(self) -> str:
        """Compact JSON in schema key order: the exact form the LLM is trained to emit."""
        # DEL is escaped too: llguidance's JSON strings (like many strict parsers) refuse it raw.
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":")).replace("\x7f", "\\u007f")

    def as_dict(self) -> dict:
        """Plain data, leaving out parameters that were not given."""
        calls = []
        for inv in self.invocations:
            call = {"capability": inv.capability, "prompt": inv.prompt}
            if inv.params.given():
                call["params"] = inv.params.given()
            calls.append(call)
        return {"text": self.text, "invocations": calls}


def capabilities(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The built-in capabilities plus those a config's zoo registers, without repeats."""
    return tuple(dict.fromkeys([*BUILTIN_CAPABILITIES, *extra]))


def json_schema(caps: Iterable[str] = BUILTIN_CAPABILITIES) -> dict:
    """JSON Schema of a meta-response for these capabilities (generated from the models)."""
    schema = MetaResponse.model_json_schema()
    defs = schema["$defs"]
    defs["Invocation"]["properties"]["capability"]["enum"] = list(caps)
    defs["Invocation"]["required"] = ["capability", "prompt"]
    for props in (defs["RenderParams"]["properties"], defs["Invocation"]["properties"], schema["properties"]):
        for prop in props.values():
            prop.pop("default", None)  # "default: null" would read as "null allowed" to some tools
    schema["required"] = ["text", "invocations"]
    return schema


def validate(data: object, caps: Iterable[str] = BUILTIN_CAPABILITIES) -> MetaResponse:
    try:
        return MetaResponse.model_validate(data, context={"capabilities": tuple(caps)})
    except ValidationError as e:
        raise MetaResponseError(reason(e)) from None


_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)\n?```", re.S)


def unfence(text: str) -> str:
    """The body of the first Markdown code fence in ``text``, else ``text``, stripped (models like fences)."""
    fenced = _FENCE.search(text)
    return (fenced.group(1) if fenced else text).strip()
_LEGACY = re.compile(r"^Modality:\s*((?:\[[A-Za-z]+\][\s,]*)+)(.*)$", re.S)


def _parse_legacy(text: str, caps: tuple[str, ...]) -> MetaResponse:
    m = _LEGACY.match(text)
    assert m is not None
    flags = [f.upper() for f in re.findall(r"\[([A-Za-z]+)\]", m.group(1))]
    unknown = [f for f in flags if f not in LEGACY_FLAGS]
    if unknown:
        raise MetaResponseError(f"legacy response: unknown modality flag [{unknown[0]}]; "
                                f"known: {', '.join(f'[{f}]' for f in LEGACY_FLAGS)}")
    rest = m.group(2).strip()
    if not rest.startswith("Prompt:"):
        raise MetaResponseError("legacy response: 'Prompt:' is missing after the modality flags")
    prompt = rest.removeprefix("Prompt:").split("###")[0].strip()
    if not prompt:
        raise MetaResponseError("legacy response: the prompt after 'Prompt:' is empty")
    targets = list(dict.fromkeys(LEGACY_FLAGS[f] for f in flags))
    text_reply = prompt if None in targets else ""
    invocations = [{"capability": c, "prompt": prompt} for c in targets if c is not None]
    return validate({"text": text_reply, "invocations": invocations}, caps)


def parse(text: str, caps: Iterable[str] = BUILTIN_CAPABILITIES) -> MetaResponse:
    """A meta-response from model output: JSON (bare or in a code fence) or the official format."""
    caps = tuple(caps)
    body = text.strip()
    if not body:
        raise MetaResponseError("empty response")
    body = unfence(body)
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as e:
            raise MetaResponseError(f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return validate(data, caps)
    if _LEGACY.match(body):
        return _parse_legacy(body, caps)
    raise MetaResponseError("neither a JSON object nor the official 'Modality: [X] Prompt: ...' format")


_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: How a serialised meta-response begins, up to the reply's first character.
_TEXT_HEAD = MetaResponse(text="").to_json().split('""')[0] + '"'


def text_prefix(raw: str) -> str:
    """The decoded part of ``"text"`` in a partial meta-response (for streaming the reply).

    It relies on :meth:`MetaResponse.to_json`'s key order, which puts the reply first.
    """
    head = _TEXT_HEAD
    if not raw.startswith(head):
        return ""
    out, i, s = [], len(head), raw
    while i < len(s):
        c = s[i]
        if c == '"':
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(s):
            break
        if s[i + 1] == "u":
            if i + 6 > len(s):
                break
            try:
                out.append(chr(int(s[i + 2 : i + 6], 16)))
            except ValueError:
                break
            i += 6
        else:
            out.append(_JSON_ESCAPES.get(s[i + 1], s[i + 1]))
            i += 2
    return "".join(out)
