"""How a request's failures and results reach HTTP, the same way on every route.

One error body (FastAPI's ``detail`` and OpenAI's ``error`` object with ``message``, ``type``,
``param`` and ``code``, so either kind of client reads it), one status per kind of failure, one
link per generated file (signed when the server has a key: :mod:`.signing`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from modaverse.core.errors import ModaverseError
from modaverse.serve.service import MEDIA_TYPES, Busy, Cancelled, UploadError

log = logging.getLogger("modaverse.serve")

#: OpenAI's error ``type`` per status.
KINDS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
         429: "rate_limit_error", 503: "server_busy"}


class ApiError(HTTPException):
    """An HTTP error that names the request field at fault (OpenAI's ``param``) and a short ``code``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(status, message, headers)
        self.param, self.code = param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """Every error's body: ``detail`` (FastAPI's key) and ``error`` (OpenAI's, which its clients read)."""
    kind = KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"detail": message, "error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, headers: dict | None = None, param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    if status == 500:  # a fault inside, not a passing state: OpenAI's clients must not retry it
        headers = {**(headers or {}), "x-should-retry": "false"}
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def http_error(e: BaseException) -> HTTPException:
    """A request's failure as its status: the upload's own (413/415/422), 503 with Retry-After when the
    queue is full, 422 for any other user error, 500 (logged with its traceback) for a fault inside."""
    if isinstance(e, HTTPException):
        return e
    if isinstance(e, UploadError):
        return ApiError(e.status, str(e), e.param)
    if isinstance(e, Busy):
        return ApiError(503, str(e), headers={"Retry-After": "1"})
    if isinstance(e, Cancelled):
        return ApiError(499, str(e))
    if isinstance(e, ModaverseError):
        return HTTPException(422, str(e))
    log.error("request failed", exc_info=e)  # one request's failure stays in its own response
    return HTTPException(500, f"the request failed: {type(e).__name__}: {e}")


async def await_turn(request: Request, service, rid: str, future):
    """A request's turn, awaited without holding a thread; a client that goes away (the server hears
    ``http.disconnect``, as a streaming response listens for it) cancels it at once."""
    import asyncio

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiter, gone = asyncio.wrap_future(future), asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if waiter in done:
        return waiter.result()
    service.cancel(rid)
    raise Cancelled("the client went away")


def output_links(request: Request, rid: str, files: Iterable[Path]) -> list[dict]:
    """Each generated file as ``{name, url, media_type}``; the URL is this server's ``/v1/outputs`` route,
    signed and expiring when the server has a key (a browser fetches it without a header)."""
    signer = request.app.state.signer
    out = []
    for p in files:
        url = request.url_for("output", rid=rid, name=p.name)
        if signer is not None:
            url = url.include_query_params(**signer.params(url.path))
        out.append({"name": p.name, "url": str(url),
                    "media_type": MEDIA_TYPES.get(p.suffix.lower(), "application/octet-stream")})
    return out
