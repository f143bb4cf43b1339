"""The requests a server is still reading, counted for the batcher.

A batch should not start a few milliseconds before the next requests finish arriving: under
a burst, the first one would decode alone. The middleware counts each model request from its
first byte until the route has queued or refused it; the batcher waits while any is counted.
"""

from __future__ import annotations

from fastapi import Request


class Arrivals:
    """Counts the model requests the server is still reading, from their first byte: the batcher waits
    for them instead of starting a batch without them. The route says when one is read (queued or
    refused); the response's end says it otherwise."""

    ROUTES = ("/v1/chat/completions", "/v1/generate")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.ROUTES:
            return await self.app(scope, receive, send)
        service = getattr(scope["app"].state, "service", None)
        if service is None:
            return await self.app(scope, receive, send)
        arrival = service.arriving()
        scope.setdefault("state", {})["arrival"] = arrival
        try:
            await self.app(scope, receive, send)
        finally:
            arrival.read()


def read(request: Request) -> None:
    """This request has been read (it is queued, or refused): it no longer delays a batch."""
    arrival = getattr(request.state, "arrival", None)
    if arrival is not None:
        arrival.read()
