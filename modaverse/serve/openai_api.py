"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI chat API, multimodal.

Any OpenAI client talks to it. A request carries the whole conversation (the server keeps
no session, so replicas behind a load balancer are interchangeable); media travel as
content parts, base64 in the body:

- ``{"type": "text", "text": ...}``
- ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` (http URLs are
  refused: the server never fetches)
- ``{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav" | "mp3"}}``
- ``{"type": "file", "file": {"file_data": "data:video/mp4;base64,..." or BASE64, "filename": "clip.mp4"}}``
  for video and everything else (the extension names the type)

Each media part becomes a ``<media>`` at its place in the message. The reply is
``choices[0].message.content``; the meta-response, output URLs and render errors travel in
``choices[0].message.modaverse`` (in streaming, in the last chunk's ``delta.modaverse``).
An assistant turn sent back is read as its text, and as its invocations too when it
carries that ``modaverse`` field. ``stream: true`` sends the text as it is decoded, as
server-sent events ending with ``data: [DONE]``. Body extras: ``render`` (default true; false
answers without running the generators) and ``constrained``.
"""

from __future__ import annotations

import base64
import binascii
import json
import queue
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modaverse.config import MIN_NEW_TOKENS
from modaverse.serve.arrivals import read
from modaverse.serve.http import error_body, http_error, output_links
from modaverse.serve.service import Service, Settings, UploadError, check_uploads

router = APIRouter()

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?;base64,(.*)", re.S)
#: Extensions for the media types a data URL may declare (anything else: the part's filename).
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
        "image/bmp": ".bmp", "image/tiff": ".tiff", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
        "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/ogg": ".ogg", "video/mp4": ".mp4",
        "video/webm": ".webm", "video/quicktime": ".mov", "application/x-npy": ".npy"}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients echo fields of ours (modaverse) and of theirs

    role: Literal["user", "assistant", "system", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI parameters we do not use are accepted and ignored

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(None, ge=MIN_NEW_TOKENS, le=8192)
    max_completion_tokens: int | None = Field(None, ge=MIN_NEW_TOKENS, le=8192)
    seed: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1, le=1)
    render: bool = True
    constrained: bool | None = None


def _decode_base64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, f"{where}: not valid base64") from None


def _media_part(part: dict, where: str) -> tuple[str, bytes]:
    """(file name, bytes) of one media content part."""
    kind = part.get("type")
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url", "")
        m = _DATA_URL.fullmatch(url)
        if not m:
            raise HTTPException(422, f"{where}: image_url must be a data: URL with base64 content (the server "
                                     "does not fetch URLs)")
        return f"image{_EXT.get(m.group(1) or '', '.png')}", _decode_base64(m.group(3), where)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        fmt = str(audio.get("format", "wav")).lower()
        if fmt not in ("wav", "mp3", "flac", "ogg"):
            raise HTTPException(415, f"{where}: unsupported input_audio format {fmt!r}; use wav or mp3")
        return f"audio.{fmt}", _decode_base64(str(audio.get("data", "")), where)
    if kind == "file":
        file = part.get("file") or {}
        data, name = str(file.get("file_data", "")), str(file.get("filename") or "")
        m = _DATA_URL.fullmatch(data)
        if m:
            data = m.group(3)
            name = name or f"file{_EXT.get(m.group(1) or '', '')}"
        if not name:
            raise HTTPException(422, f"{where}: a file part needs a filename (its extension names the type)")
        return Path(name).name, _decode_base64(data, where)
    raise HTTPException(422, f"{where}: unsupported content part type {kind!r}; use text, image_url, input_audio "
                             "or file")


def _read(message: Message, index: int) -> tuple[str, list[tuple[str, bytes]]]:
    """A message's text with ``<media>`` where its media parts were, and those parts."""
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    pieces, media = [], []
    for k, part in enumerate(message.content):
        if part.get("type") == "text":
            pieces.append(str(part.get("text", "")))
        else:
            media.append(_media_part(part, f"messages[{index}].content[{k}]"))
            pieces.append("<media>")
    return " ".join(p for p in pieces if p), media


def _echoed_meta(message: Message, text: str, caps) -> Any:
    """An earlier assistant turn as a meta-response: its text, and its invocations when the client
    sent back our ``modaverse`` field."""
    from modaverse.meta import schema as meta

    extra = (message.model_extra or {}).get("modaverse")
    doc = extra.get("meta_response") if isinstance(extra, dict) else None
    if isinstance(doc, dict):
        try:
            return meta.validate({"text": text, "invocations": doc.get("invocations", [])}, caps)
        except meta.MetaResponseError as e:
            raise HTTPException(422, f"an assistant message's modaverse.meta_response: {e}") from None
    return meta.MetaResponse(text=text[: meta.MAX_TEXT_CHARS])


def _conversation(body: ChatRequest, folder: Path, service: Service) -> tuple[str, list, list]:
    """The request as (instruction, saved files of the last turn, history of earlier turns)."""
    from modaverse.media import detect_modality
    from modaverse.pipeline.turn import InputRef, Turn

    turns: list[tuple[str, list[Path], Message | None]] = []
    pending: tuple[str, list[Path]] | None = None
    count = 0
    for i, msg in enumerate(body.messages):
        if msg.role not in ("user", "assistant"):
            raise HTTPException(422, f"messages[{i}]: role {msg.role!r} is not supported (the profile's system "
                                     "prompt is its config's prompt.system); send user and assistant turns")
        text, media = _read(msg, i)
        if msg.role == "assistant":
            if media:
                raise HTTPException(422, f"messages[{i}]: an assistant message carries text only")
            if pending is None:
                raise HTTPException(422, f"messages[{i}]: an assistant message must follow a user message")
            turns.append((*pending, msg))
            pending = None
            continue
        if pending is not None:
            raise HTTPException(422, f"messages[{i}]: two user messages in a row; join them into one")
        count += len(media)
        check_uploads([(name, len(data), None) for name, data in media], service.limits)
        if count > service.limits.max_files:
            raise UploadError(f"{count} media parts in the conversation: at most {service.limits.max_files}", 413)
        paths = []
        for k, (name, data) in enumerate(media):
            path = folder / f"{i}-{k}" / name
            path.parent.mkdir()
            path.write_bytes(data)
            paths.append(path)
        pending = (text, paths)
    if pending is None:
        raise HTTPException(422, "the last message must be the user's")
    history = []
    for text, paths, reply in turns:
        refs = [InputRef(str(p), detect_modality(p)) for p in paths]  # from the header: nothing decoded yet
        history.append(Turn(text, refs, _echoed_meta(reply, _read(reply, 0)[0], service.capabilities), "", True))
    return pending[0], [(p, None) for p in pending[1]], history


def _extra(request: Request, rid: str, turn) -> dict:
    return {"meta_response": turn.meta.as_dict(), "outputs": output_links(request, rid, turn.outputs),
            "render_errors": turn.errors}


@router.get("/v1/models", summary="the served profile, as an OpenAI model list")
def models(request: Request) -> dict:
    service: Service = request.app.state.service
    return {"object": "list", "data": [{"id": service.pipe.config.name, "object": "model",
                                        "created": int(service.started), "owned_by": "modaverse"}]}


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (multimodal, streaming)")
def chat_completions(request: Request, body: ChatRequest):
    service: Service = request.app.state.service
    name = service.pipe.config.name
    if body.model not in (None, "", name):
        raise HTTPException(404, f"model {body.model!r} is not served here; GET /v1/models lists {name!r}")
    from modaverse.pipeline.assistant import check_inputs

    folder = Path(tempfile.mkdtemp(prefix="modaverse-upload-"))
    settings = Settings(body.temperature, body.max_completion_tokens or body.max_tokens, body.seed, body.constrained,
                        body.render)
    chunks: queue.Queue = queue.Queue()
    try:
        instruction, files, history = _conversation(body, folder, service)
        check_inputs(instruction, [p for p, _ in files], temperature=settings.temperature,
                     max_new_tokens=settings.max_new_tokens, seed=settings.seed)
        rid, future = service.submit(instruction, files, history, settings,
                                     on_text=chunks.put if body.stream else None)
    except Exception as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise http_error(e) from None
    finally:
        read(request)
    future.add_done_callback(lambda _: (shutil.rmtree(folder, ignore_errors=True), chunks.put(None)))
    created = int(time.time())
    head = {"id": f"chatcmpl-{rid}", "created": created, "model": name}
    if body.stream:
        return StreamingResponse(_events(request, head, rid, future, chunks), media_type="text/event-stream")
    try:
        turn = future.result()
    except Exception as e:
        raise http_error(e) from None
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": turn.finish_reason,
                         "message": {"role": "assistant", "content": turn.text,
                                     "modaverse": _extra(request, rid, turn)}}],
            "usage": _usage(turn)}


def _usage(turn) -> dict:
    new = int(turn.timings.get("new_tokens", 0))
    return {"prompt_tokens": 0, "completion_tokens": new, "total_tokens": new}


def _events(request: Request, head: dict, rid: str, future, chunks: queue.Queue):
    """Server-sent events: the role, each piece of text as it is decoded, then the end and [DONE]."""

    def event(delta: dict, finish: str | None = None) -> str:
        doc = {**head, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    while (piece := chunks.get()) is not None:
        yield event({"content": piece})
    try:
        turn = future.result()
    except Exception as e:  # the status line has gone; the error travels as an event, as OpenAI's do
        error = http_error(e)
        yield f"data: {json.dumps(error_body(error.status_code, error.detail), ensure_ascii=False)}\n\n"
    else:
        yield event({"modaverse": _extra(request, rid, turn)}, turn.finish_reason)
    yield "data: [DONE]\n\n"
