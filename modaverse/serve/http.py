"""How a request's failures and results reach HTTP, the same way on every route.

One error body (FastAPI's ``detail`` and OpenAI's ``error`` object, so either kind of client
reads it), one status per kind of failure, one link per generated file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from modaverse.core.errors import ModaverseError
from modaverse.serve.service import MEDIA_TYPES, Busy, UploadError

log = logging.getLogger("modaverse.serve")


def error_body(status: int, message: str) -> dict:
    """Every error's body: ``detail`` (FastAPI's key) and ``error`` (OpenAI's, which its clients read)."""
    kind = "authentication_error" if status == 401 else "invalid_request_error" if status < 500 else "server_error"
    return {"detail": message, "error": {"message": message, "type": kind, "code": status}}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def http_error(e: BaseException) -> HTTPException:
    """A request's failure as its status: the upload's own (413/415/422), 503 with Retry-After when the
    queue is full, 422 for any other user error, 500 (logged with its traceback) for a fault inside."""
    if isinstance(e, HTTPException):
        return e
    if isinstance(e, UploadError):
        return HTTPException(e.status, str(e))
    if isinstance(e, Busy):
        return HTTPException(503, str(e), headers={"Retry-After": "1"})
    if isinstance(e, ModaverseError):
        return HTTPException(422, str(e))
    log.error("request failed", exc_info=e)  # one request's failure stays in its own response
    return HTTPException(500, f"the request failed: {type(e).__name__}: {e}")


def output_links(request: Request, rid: str, files: Iterable[Path]) -> list[dict]:
    """Each generated file as ``{name, url, media_type}``; the URL is this server's ``/v1/outputs`` route."""
    return [{"name": p.name, "url": str(request.url_for("output", rid=rid, name=p.name)),
             "media_type": MEDIA_TYPES.get(p.suffix.lower(), "application/octet-stream")} for p in files]
