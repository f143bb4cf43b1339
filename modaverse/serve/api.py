"""The REST API and the web demo on one FastAPI server (``modaverse serve``).

| route | what |
|---|---|
| ``POST /v1/generate`` | multipart: ``instruction`` and ``files`` (any number of inputs); returns the meta-response and URLs of the outputs |
| ``GET /v1/outputs/{id}/{name}`` | a generated file; ``id`` is 128 random bits, so outputs cannot be found by guessing |
| ``POST /v1/chat/completions`` | the OpenAI chat API, multimodal, streaming (:mod:`.openai_api`) |
| ``GET /v1/models`` | the served profile, as an OpenAI model list |
| ``GET /healthz`` | liveness, the loaded config, capabilities, queue depth, batch sizes formed |
| ``GET /openapi.json``, ``/docs`` | the schema FastAPI derives from the models below |
| ``/`` | the Gradio chat demo (:mod:`.ui`) |

The pipeline is built in the app's lifespan, so importing this module loads nothing and
the server answers only once the models are ready. Errors are JSON ``{"detail": "..."}``
with one line naming the culprit: 413 (too large), 415 (unsupported type), 422 (a file
that does not decode, bad settings), 503 with ``Retry-After`` (queue full), 500 (the
request failed inside the model; the server carries on).
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from modaverse import __version__
from modaverse.config import MAX_NEW_TOKENS, MIN_NEW_TOKENS, Config, GenerationConfig
from modaverse.core.errors import ModaverseError
from modaverse.pipeline.assistant import check_inputs
from modaverse.serve.arrivals import Arrivals, read
from modaverse.serve.chat_request import ChatRequest
from modaverse.serve.http import await_turn, error_response, http_error, output_links
from modaverse.serve.openai_api import router as openai_router
from modaverse.serve.service import (
    MEDIA_TYPES,
    Limits,
    Service,
    Settings,
    check_uploads,
    safe_name,
    upload_folder,
)
from modaverse.serve.signing import UrlSigner

log = logging.getLogger("modaverse.serve")


class Output(BaseModel):
    name: str
    url: str
    media_type: str


class GenerateResponse(BaseModel):
    id: str = Field(description="this request's output folder id (128 random bits)")
    text: str = Field(description="the reply's text")
    meta_response: dict = Field(description="the validated meta-response: text and invocations")
    outputs: list[Output] = Field(description="files rendered by the invocations")
    render_errors: list[str] = Field(description="invocations that failed to render, with the reason")
    inputs: list[dict] = Field(description="the uploaded inputs and the modality each was read as")
    timings: dict[str, float] = Field(description="seconds per stage")
    queued_s: float = Field(description="seconds spent waiting for the model")


class Queue(BaseModel):
    waiting: int = Field(description="requests queued, not yet decoding")
    size: int = Field(description="how many may wait before the next is refused (503)")
    oldest_wait_s: float = Field(description="how long the longest-waiting request has waited")


class Health(BaseModel):
    status: str
    config: str
    capabilities: list[str]
    modalities: list[str]
    queue: Queue
    served: int
    uptime_s: float
    batches: dict = Field(description="max_batch, wait_ms, and how many batches of each size ran")
    embedding_cache: dict | None = Field(description="entries, size, hits and misses of the embeddings LRU")
    generators: dict = Field(description="generators loaded, and the bounds on how many and how much memory")


ERRORS = {code: {"description": text, "content": {"application/json": {"example": {"detail": "..."}}}}
          for code, text in ((413, "an upload over the size or count limit"), (415, "an unsupported file type"),
                             (422, "a file that does not decode, or invalid settings"),
                             (503, "the queue is full; retry after Retry-After seconds"),
                             (500, "the request failed inside the model"))}


class BodyCap:
    """Refuses a request body over ``cap`` bytes: from its Content-Length before reading, and for a
    chunked body (no length) as soon as the bytes read pass the cap, so nothing larger is spooled."""

    def __init__(self, app, cap: int):
        self.app, self.cap = app, cap

    def _refusal(self, size: str) -> str:
        return f"request body of {size} is over the {self.cap / 1048576:.0f} MB limit"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.cap:
            response = error_response(413, self._refusal(f"{int(length) / 1048576:.1f} MB"))
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.cap:  # FastAPI passes an HTTPException raised while parsing through as itself
                raise HTTPException(413, self._refusal("more than that"))
            return message

        await self.app(scope, counted, send)



class BearerKey:
    """Every request must carry ``Authorization: Bearer KEY`` (what OpenAI clients send); else 401. An
    output URL with a valid signature (:mod:`.signing`) needs no header: a browser showing it sends none."""

    def __init__(self, app, key: str, signer: UrlSigner):
        self.app, self.key, self.signer = app, key.encode(), signer

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if (scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"].startswith("/v1/outputs/")
                and self.signer.valid(scope["path"], scope.get("query_string", b"").decode("latin-1"))):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, b"Bearer " + self.key):
            response = error_response(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                      {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _limits(name: str) -> dict:
    """The ``generation:`` section's own bounds on a field: the API documents what check_inputs enforces."""
    return {k: getattr(m, k) for m in GenerationConfig.model_fields[name].metadata for k in ("ge", "gt", "le", "lt")
            if getattr(m, k, None) is not None}

def create_app(config: Config, outputs: Path, limits: Limits | None = None, *, ui: bool = True,
               pipe=None, api_key: str | None = None, cors_origins: list[str] | None = None) -> FastAPI:
    """The server; the models load when it starts (``pipe`` reuses one already built, for tests).
    With ``api_key``, every route (the web demo included) asks for ``Authorization: Bearer KEY``, and
    output URLs are signed instead. ``cors_origins`` may call the APIs from a browser page."""
    limits = limits or Limits()
    signer = UrlSigner(api_key, limits.outputs_ttl) if api_key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from modaverse.pipeline.assistant import ModaVerse

        log.info("loading %s", config.name)
        app.state.service = Service(pipe or ModaVerse.from_config(config), outputs, limits)
        log.info("ready")
        yield

    app = FastAPI(title="modaverse", version=__version__, lifespan=lifespan,
                  description="Any-to-any multimodal assistant: inputs in, a meta-response and rendered outputs out.")
    body_cap = limits.max_files * limits.max_upload_bytes + (1 << 20)

    app.state.signer = signer
    app.add_middleware(BodyCap, cap=body_cap)
    app.add_middleware(Arrivals)
    if api_key:
        app.add_middleware(BearerKey, key=api_key, signer=signer)
    if cors_origins:  # outermost: a browser's preflight (OPTIONS, no key) is answered here
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's list of error objects, as the one line every other error is: the field and why."""
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return error_response(422, f"{field or 'request'}: {first.get('msg', 'invalid')}{more}")

    @app.exception_handler(HTTPException)
    async def one_error_body(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers, getattr(exc, "param", None),
                              getattr(exc, "code", None))

    app.include_router(openai_router)

    def openapi() -> dict:
        """FastAPI's schema, plus the chat request's (the route parses its body itself, off the event loop)."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            from pydantic.json_schema import models_json_schema

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema([(ChatRequest, "validation")], ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/healthz", response_model=Health, summary="liveness and queue depth")
    async def healthz(request: Request) -> dict:
        return request.app.state.service.status()

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS, summary="one request")
    async def generate(
        request: Request,
        instruction: Annotated[str, Form(description="the request; <media> marks where each file goes")] = "",
        files: Annotated[list[UploadFile], File(description="inputs: image, video, audio, depth, thermal, IMU")] = [],  # noqa: B006 (FastAPI copies defaults)
        modalities: Annotated[str | None, Form(description="comma-separated modality per file; empty = detect")] = None,
        temperature: Annotated[float | None, Form(**_limits("temperature"), description="0 = greedy; null = the config's")] = None,
        max_new_tokens: Annotated[int | None, Form(ge=1, le=MAX_NEW_TOKENS, description="cap on reply tokens; under "
                                                   f"{MIN_NEW_TOKENS} the reply is cut (finish_reason length)")] = None,
        seed: Annotated[int | None, Form(description="sampling and rendering seed")] = None,
        constrained: Annotated[bool | None, Form(description="decode under the meta-response grammar")] = None,
    ) -> dict:
        service: Service = request.app.state.service
        kinds = [m.strip() or None for m in modalities.split(",")] if modalities else [None] * len(files)
        if len(kinds) != len(files):
            raise HTTPException(422, f"modalities lists {len(kinds)} entries for {len(files)} files")
        try:  # the pipeline's own checks, before a request is queued or a file saved
            check_inputs(instruction, files, temperature=temperature, max_new_tokens=max_new_tokens,
                         seed=seed)
        except ModaverseError as e:
            raise HTTPException(422, str(e)) from None
        def save(tmp: str) -> list[tuple[Path, str | None]]:
            saved = []
            for i, (f, kind) in enumerate(zip(files, kinds, strict=True)):
                path = Path(tmp) / str(i) / safe_name(f.filename or "upload")  # errors show the client's name
                path.parent.mkdir()
                with path.open("wb") as out:
                    while chunk := f.file.read(1 << 20):
                        out.write(chunk)
                saved.append((path, kind))
            return saved

        try:
            check_uploads([(f.filename or "upload", f.size or 0, kind) for f, kind in zip(files, kinds, strict=True)],
                          limits)
            with upload_folder() as tmp:
                saved = await run_in_threadpool(save, tmp)
                read(request)
                rid, future = service.submit(instruction, saved, settings=Settings(temperature, max_new_tokens, seed,
                                                                                   constrained))
                turn = await await_turn(request, service, rid, future)
                names = {str(path): f.filename for (path, _), f in zip(saved, files, strict=True)}
        except Exception as e:
            raise http_error(e) from None
        return {
            "id": rid, "text": turn.text, "meta_response": turn.meta.as_dict(),
            "outputs": output_links(request, rid, turn.outputs),
            "render_errors": turn.errors,
            "inputs": [{"name": names.get(i.path, Path(i.path).name), "modality": i.modality} for i in turn.inputs],
            "timings": {k: round(v, 4) for k, v in turn.timings.items()},
            "queued_s": round(turn.timings.get("queue", 0.0), 4),
        }

    @app.get("/v1/outputs/{rid}/{name}", name="output", summary="a generated file", responses={404: {}})
    def output(request: Request, rid: str, name: str):
        path = request.app.state.service.output_path(rid, name)
        if path is None:
            raise HTTPException(404, "no such output")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower()))

    if ui:
        import gradio as gr

        from modaverse.serve.ui import CSS, build_ui

        blocks = build_ui(lambda: app.state.service, limits)
        blocks.queue(max_size=limits.queue_size, default_concurrency_limit=limits.max_batch)  # batched like the API
        app = gr.mount_gradio_app(app, blocks, path="/", allowed_paths=[str(outputs)], ssr_mode=False,
                                  footer_links=[], max_file_size=limits.max_upload_bytes, css=CSS)
    return app
