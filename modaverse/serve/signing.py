"""Output URLs a browser can open: signed and expiring, so no header is needed and none can be guessed.

A picture in a chat client's Markdown is fetched by the browser, which sends no
``Authorization`` header. With an API key, each output URL therefore carries ``expires`` (Unix
seconds) and ``sig``, an HMAC-SHA256 over the path and the expiry keyed by a key derived from
the API key: replicas that share the key accept each other's URLs, and a URL stops working when
it expires. Without an API key the server is on loopback and its URLs need nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs

#: How long an output URL works when ``--outputs-ttl`` does not say (its files may be pruned sooner).
DEFAULT_TTL = 24 * 3600.0


class UrlSigner:
    """Signs ``/v1/outputs/...`` paths for ``ttl`` seconds and checks what comes back."""

    def __init__(self, api_key: str, ttl: float | None = None):
        self.key = hmac.new(api_key.encode(), b"modaverse output urls", hashlib.sha256).digest()
        self.ttl = ttl or DEFAULT_TTL

    def _sig(self, path: str, expires: int) -> str:
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def params(self, path: str, now: float | None = None) -> dict[str, str]:
        """The query parameters ``expires`` and ``sig`` that let ``path`` be fetched without a key."""
        expires = int((now if now is not None else time.time()) + self.ttl)
        return {"expires": str(expires), "sig": self._sig(path, expires)}

    def valid(self, path: str, query: str, now: float | None = None) -> bool:
        """Whether the query string ``query`` holds an unexpired signature of ``path``."""
        q = parse_qs(query)
        try:
            expires, sig = int(q["expires"][0]), q["sig"][0]
        except (KeyError, IndexError, ValueError):
            return False
        fresh = expires >= (now if now is not None else time.time())
        return fresh and hmac.compare_digest(sig, self._sig(path, expires))
