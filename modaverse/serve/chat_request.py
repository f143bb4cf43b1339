"""An OpenAI chat request, read as vLLM reads one, into what the pipeline answers.

What clients send by default is accepted; what the server cannot do is refused with a 400
naming the field, never dropped silently (docs/serve.md has the table of every field):

- ``system`` and ``developer`` messages are joined and follow the profile's own system prompt;
- consecutive user messages are joined into one turn (their text and media in order);
- a trailing assistant message (a prefill) is refused: the last message must be the user's;
- ``tool`` messages, ``tools``, ``tool_choice``, ``functions``, ``response_format`` other than
  text, ``logprobs`` and ``n`` above 1 are refused;
- media parts: ``image_url`` (a data URL; the server never fetches), ``input_audio`` and
  ``file``; base64 may be wrapped over lines; each message may carry ``max_files`` parts.

Parsing runs off the event loop (the route hands it to a worker thread): a body of several
hundred megabytes is bounded by the server's body cap before it is read, and decoded here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modaverse.config import MAX_NEW_TOKENS
from modaverse.core.errors import ModaverseError
from modaverse.serve.http import ApiError
from modaverse.serve.service import Settings, UploadError, check_uploads, safe_name

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,(.*)", re.S)
#: Extensions for the media types a data URL may declare (anything else: the part's filename).
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
        "image/bmp": ".bmp", "image/tiff": ".tiff", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
        "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/ogg": ".ogg", "video/mp4": ".mp4",
        "video/webm": ".webm", "video/quicktime": ".mov", "application/x-npy": ".npy"}
#: Links to our own outputs that a client sends back inside an assistant message's content.
_OUTPUT_LINKS = re.compile(r"(\n\n(!?\[[^\]\n]*\]\([^)\s]*/v1/outputs/[^)\s]*\)\n?)+)$")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients echo fields of ours (modaverse) and of theirs (name)

    role: Literal["user", "assistant", "system", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatRequest(BaseModel):
    """The request body. Unknown fields are accepted and ignored (clients add their own); the ones
    whose meaning this server cannot honour are refused by :func:`refuse_unsupported`."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # ours
    render: bool = Field(True, description="run the generators (false: the meta-response only)")
    constrained: bool | None = Field(None, description="decode under the meta-response grammar (default: the config's)")
    media_links: bool = Field(True, description="append Markdown links to the generated files to `content`")


@dataclass
class Conversation:
    """A request read: the last user turn, its saved files and their labels, earlier turns, settings."""

    instruction: str
    files: list[tuple[Path, None]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    history: list = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)


def validate(raw: bytes) -> ChatRequest:
    """The body as a :class:`ChatRequest`; a 400 naming the first field at fault."""
    try:
        return ChatRequest.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        param = re.sub(r"\.(\d+)", r"[\1]", where) or None
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        message = "the body is not JSON" if first.get("type") == "json_invalid" else first.get("msg", "invalid")
        raise ApiError(400, f"{param or 'body'}: {message}{more}", param, first.get("type")) from None


def refuse_unsupported(body: ChatRequest) -> None:
    """A 400 naming each field whose meaning this server cannot honour, rather than ignoring it."""
    refusals = [
        ("n", body.n is not None and body.n > 1, "one choice per request: n must be 1"),
        ("tools", bool(body.tools), "this server calls no tools; its generators are chosen by the model"),
        ("functions", bool(body.functions), "this server calls no functions"),
        ("tool_choice", body.tool_choice not in (None, "none"), "this server calls no tools"),
        ("function_call", body.function_call not in (None, "none"), "this server calls no functions"),
        ("response_format", (body.response_format or {}).get("type", "text") != "text",
         "replies are the meta-response's text; structured output is not offered (the meta-response is in "
         "message.modaverse)"),
        ("logprobs", bool(body.logprobs) or bool(body.top_logprobs), "log probabilities are not returned"),
    ]
    for param, refused, why in refusals:
        if refused:
            raise ApiError(400, f"{param}: {why}", param, "unsupported_parameter")


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, f"stop: {len(stops)} strings; at most 4", "stop")
    if any(not s for s in stops):
        raise ApiError(400, "stop: an empty string would stop before the reply begins", "stop")
    return tuple(stops)


def _base64(data: str, where: str) -> bytes:
    try:  # line-wrapped base64 (the `base64` tool's default output) is fine
        return base64.b64decode(re.sub(r"\s+", "", data), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: not valid base64", where) from None


def _media_part(part: dict, where: str) -> tuple[str, bytes]:
    """(file name, bytes) of one media content part."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url", "") if isinstance(image, dict) else str(image or "")
        m = _DATA_URL.fullmatch(url)
        if not m:
            raise ApiError(400, f"{where}: image_url must be a data: URL with base64 content (the server "
                                "does not fetch URLs)", where)
        return f"image{_EXT.get(m.group(1) or '', '.png')}", _base64(m.group(3), where)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        fmt = str(audio.get("format", "wav")).lower()
        if fmt not in ("wav", "mp3", "flac", "ogg"):
            raise ApiError(415, f"{where}: unsupported input_audio format {fmt[:20]!r}; use wav, mp3, flac or ogg", where)
        return f"audio.{fmt}", _base64(str(audio.get("data", "")), where)
    if kind == "file":
        file = part.get("file") or {}
        data, name = str(file.get("file_data", "")), str(file.get("filename") or "")
        m = _DATA_URL.fullmatch(data)
        if m:
            data = m.group(3)
            name = name or f"file{_EXT.get(m.group(1) or '', '')}"
        if not name:
            raise ApiError(400, f"{where}: a file part needs a filename (its extension names the type)", where)
        return safe_name(name), _base64(data, where)
    raise ApiError(400, f"{where}: unsupported content part type {str(kind)[:40]!r}; use text, image_url, "
                        "input_audio or file", where)


def _text(message: Message, index: int) -> str:
    """A system, developer or assistant message's text: a string or text parts only."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    pieces = []
    for k, part in enumerate(message.content):
        if part.get("type") not in ("text", "refusal"):
            raise ApiError(400, f"messages[{index}].content[{k}]: a {message.role} message carries text only",
                           f"messages[{index}].content[{k}]")
        pieces.append(str(part.get("text", part.get("refusal", ""))))
    return "\n".join(p for p in pieces if p)


def _user(message: Message, index: int) -> tuple[str, list[tuple[str, bytes, str]]]:
    """A user message's text with ``<media>`` where its media parts were, and those parts (name, bytes, label)."""
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    pieces, media = [], []
    for k, part in enumerate(message.content):
        if part.get("type") == "text":
            pieces.append(str(part.get("text", "")))
        else:
            where = f"messages[{index}].content[{k}]"
            media.append((*_media_part(part, where), where))
            pieces.append("<media>")
    return " ".join(p for p in pieces if p), media


def _echoed_meta(message: Message, index: int, caps) -> Any:
    """An earlier assistant turn as a meta-response: its text (without the links to our outputs that
    ``content`` carries), and its invocations when the client sent back our ``modaverse`` field."""
    from modaverse.meta import schema as meta

    text = _OUTPUT_LINKS.sub("", _text(message, index))
    extra = (message.model_extra or {}).get("modaverse")
    doc = extra.get("meta_response") if isinstance(extra, dict) else None
    if isinstance(doc, dict):
        try:
            return meta.validate({"text": doc.get("text", text), "invocations": doc.get("invocations", [])}, caps)
        except meta.MetaResponseError as e:
            raise ApiError(400, f"messages[{index}].modaverse.meta_response: {e}", f"messages[{index}]") from None
    return meta.MetaResponse(text=text[: meta.MAX_TEXT_CHARS])


def read_conversation(body: ChatRequest, folder: Path, service) -> Conversation:
    """The request as the pipeline's inputs; media parts saved under ``folder`` (removed by the caller)."""
    from modaverse.media import detect_modality
    from modaverse.media.sniff import check_file
    from modaverse.pipeline.turn import InputRef, Turn

    refuse_unsupported(body)
    system: list[str] = []
    turns: list[tuple[str, list[Path], Message, int]] = []
    text, saved, labels = "", [], []  # the user turn being read (consecutive user messages join)
    open_turn = False
    for i, msg in enumerate(body.messages):
        if msg.role in ("system", "developer"):
            system.append(_text(msg, i))
            continue
        if msg.role == "tool" or (msg.model_extra or {}).get("tool_calls"):
            raise ApiError(400, f"messages[{i}]: tool calls and tool messages are not supported (this server "
                                "calls no tools)", f"messages[{i}].role")
        if msg.role == "assistant":
            if not open_turn:
                raise ApiError(400, f"messages[{i}]: an assistant message must follow a user message",
                               f"messages[{i}]")
            turns.append((text, saved, msg, i))
            text, saved, labels, open_turn = "", [], [], False
            continue
        words, media = _user(msg, i)
        check_uploads([(name, len(data), None) for name, data, _ in media], service.limits, per="message",
                      labels=[where for _, _, where in media])
        for k, (name, data, where) in enumerate(media):
            path = folder / f"{i}-{k}" / name
            path.parent.mkdir()
            path.write_bytes(data)
            try:  # its first bytes against its type; decoding waits for its batch
                check_file(path)
            except ModaverseError as e:
                raise ApiError(400, str(e).replace(str(path), where), where) from None
            saved.append(path)
            labels.append(where)
        text = f"{text}\n{words}" if open_turn and text and words else (text or words)
        open_turn = True
    if not open_turn:
        raise ApiError(400, f"messages[{len(body.messages) - 1}]: the last message must be the user's (an "
                            "assistant prefill is not supported)", f"messages[{len(body.messages) - 1}]")
    history = []
    for words, paths, reply, i in turns:
        refs = [InputRef(str(p), detect_modality(p)) for p in paths]  # from the header: nothing decoded yet
        history.append(Turn(words, refs, _echoed_meta(reply, i, service.capabilities), "", True))
    settings = Settings(body.temperature, body.max_completion_tokens or body.max_tokens, body.seed, body.constrained,
                        body.render, body.top_p, stop_strings(body.stop), "\n\n".join(s for s in system if s) or None)
    return Conversation(text, [(p, None) for p in saved], labels, history, settings)


__all__ = ["ChatRequest", "Conversation", "UploadError", "read_conversation", "validate"]
