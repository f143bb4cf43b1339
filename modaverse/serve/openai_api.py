"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI chat API, multimodal.

Any OpenAI client talks to it (the official ``openai`` client, LangChain's ``ChatOpenAI``,
LiteLLM, Open WebUI). A request carries the whole conversation (the server keeps no session,
so replicas behind a load balancer are interchangeable); media travel as content parts,
base64 in the body (:mod:`.chat_request` reads them). The reply's ``content`` is the
meta-response's text followed by Markdown links to the generated files, which any client
shows; the meta-response, output URLs and render errors travel in ``message.modaverse`` (in a
stream, in the last content chunk's ``delta.modaverse``).

The route is async: a request holds no thread while it waits for the model, so what is in
flight is bounded by the queue (503 past it), and ``/healthz`` answers under any load. The
body is parsed on a worker thread after the queue has been consulted. A client that goes away
cancels its request, streamed or not. Streams send a keep-alive comment while they are silent
and ask proxies not to buffer them (``X-Accel-Buffering: no``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from modaverse.serve.arrivals import read
from modaverse.serve.chat_request import ChatRequest, read_conversation, validate
from modaverse.serve.http import ApiError, await_turn, error_body, http_error, output_links
from modaverse.serve.service import Busy, Service

router = APIRouter()

#: Headers of an event stream: never cached, never buffered by a proxy (nginx reads X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def content(text: str, outputs: list[dict], links: bool) -> str:
    """The reply as chat clients show it: its text, then a Markdown link per generated file (pictures
    inline, audio and video as links)."""
    if not links or not outputs:
        return text
    lines = [f"{'!' if o['media_type'].startswith('image/') else ''}[{o['name']}]({o['url']})" for o in outputs]
    return f"{text}\n\n" + "\n".join(lines)


def usage(turn) -> dict:
    prompt, new = int(turn.timings.get("prompt_tokens", 0)), int(turn.timings.get("new_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


@router.get("/v1/models", summary="the served profile, as an OpenAI model list")
async def models(request: Request) -> dict:
    service: Service = request.app.state.service
    return {"object": "list", "data": [{"id": service.pipe.config.name, "object": "model",
                                        "created": int(service.started), "owned_by": "modaverse"}]}


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (multimodal, streaming)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/ChatRequest"}}}}})
async def chat_completions(request: Request):
    service: Service = request.app.state.service
    try:
        if not service.has_room():  # before a large body is read and parsed
            raise Busy(f"the server is busy ({service.limits.queue_size} requests waiting); retry shortly")
        raw = await request.body()  # bounded by the server's body cap before it is read
        body: ChatRequest = await run_in_threadpool(validate, raw)
        name = service.pipe.config.name
        if body.model not in (None, "", name):
            raise ApiError(404, f"model {body.model!r} is not served here; GET /v1/models lists {name!r}", "model",
                           "model_not_found")
        folder = Path(tempfile.mkdtemp(prefix="modaverse-upload-"))
        rid, future, chunks = await _submit(service, body, folder)
    except Exception as e:
        raise _openai_error(e) from None
    finally:
        read(request)
    head = {"id": f"chatcmpl-{rid}", "created": int(time.time()), "model": name}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_events(request, service, head, rid, future, chunks, body.media_links, include_usage),
                                 media_type="text/event-stream", headers=STREAM_HEADERS)
    try:
        turn = await await_turn(request, service, rid, future)
    except Exception as e:
        raise _openai_error(e) from None
    outputs = output_links(request, rid, turn.outputs)
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": turn.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content(turn.text, outputs, body.media_links),
                                     "modaverse": _extra(turn, outputs)}}],
            "usage": usage(turn)}


async def _submit(service: Service, body: ChatRequest, folder: Path):
    """Reads the conversation (off the event loop) and queues it; chunks of a stream arrive on a queue."""
    from modaverse.pipeline.assistant import check_inputs

    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:  # from the batcher's thread
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, item)
        except RuntimeError:  # the loop has closed (the server is stopping)
            pass

    def queue_it():
        chat = read_conversation(body, folder, service)
        check_inputs(chat.instruction, chat.files, temperature=chat.settings.temperature,
                     max_new_tokens=chat.settings.max_new_tokens, seed=chat.settings.seed)
        return service.submit(chat.instruction, chat.files, chat.history, chat.settings,
                              on_text=put if body.stream else None, labels=chat.labels)

    try:
        rid, future = await run_in_threadpool(queue_it)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    future.add_done_callback(lambda _: (shutil.rmtree(folder, ignore_errors=True), put(None)))
    return rid, future, chunks


def _openai_error(e: BaseException) -> ApiError:
    """The chat API's errors are OpenAI's: what the client got wrong is a 400 (not FastAPI's 422)."""
    error = http_error(e)
    status = 400 if error.status_code == 422 else error.status_code
    return ApiError(status, str(error.detail), getattr(error, "param", None), getattr(error, "code", None),
                    error.headers)


def _extra(turn, outputs: list[dict]) -> dict:
    return {"meta_response": turn.meta.as_dict(), "outputs": outputs, "render_errors": turn.errors}


async def _events(request: Request, service: Service, head: dict, rid: str, future, chunks: asyncio.Queue,
                  links: bool, include_usage: bool):
    """Server-sent events: the role, each piece of text as it is decoded (a keep-alive comment while
    none comes), the rest of the content (the links), the end with ``modaverse``, usage, and [DONE]."""

    def event(delta: dict | None, finish: str | None = None, **extra) -> str:
        doc = {**head, "object": "chat.completion.chunk",
               "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                     "logprobs": None}], **extra}
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    sent = ""
    try:
        yield event({"role": "assistant", "content": ""})
        while True:
            try:
                piece = await asyncio.wait_for(chunks.get(), service.limits.sse_keepalive_s)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if piece is None:
                break
            sent += piece
            yield event({"content": piece})
        try:
            turn = future.result()
        except Exception as e:  # the status line has gone; the error travels as an event, as OpenAI's do
            error = _openai_error(e)
            yield f"data: {json.dumps(error_body(error.status_code, str(error.detail), error.param, error.code))}\n\n"
        else:
            outputs = output_links(request, rid, turn.outputs)
            whole = content(turn.text, outputs, links)
            # the held-back end of the text and the links: the chunks add up to the non-streamed content
            rest = whole[len(sent):] if whole.startswith(sent) else whole
            yield event({"content": rest, "modaverse": _extra(turn, outputs)}, turn.finish_reason)
            if include_usage:
                yield event(None, usage=usage(turn))
        yield "data: [DONE]\n\n"
    finally:
        if not future.done():  # the client went away (or the server is stopping): its row leaves the batch
            service.cancel(rid)
