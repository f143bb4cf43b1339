"""Is the model hub reachable? Asked once per process, in seconds, before a hub id is loaded.

Without a network, huggingface_hub retries each lookup for 40 to 70 s and then reports a
misleading "does not appear to have a file named model_index.json". A hub id that is not
already in the local cache is checked here first: with ``HF_HUB_OFFLINE=1`` or no TCP
connection to the hub within :data:`TIMEOUT_S`, the caller gets one line naming the model
and how to give a local copy instead.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

from modaverse.core.errors import ModaverseError

TIMEOUT_S = 3.0


def in_cache(repo_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # not a valid repo id: the loader will say so
        return False


@lru_cache(maxsize=1)
def unreachable() -> str | None:
    """Why the hub cannot be used from here, or None."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "the hub is offline (HF_HUB_OFFLINE=1)"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return None
    except OSError:
        return f"the hub ({host}) cannot be reached from this machine"


def require(key: str, repo_id: str, filename: str = "config.json") -> None:
    """Raises one line when ``repo_id`` would have to come from an unreachable hub."""
    if in_cache(repo_id, filename):
        return
    reason = unreachable()
    if reason:
        raise ModaverseError(f"{key} {repo_id}: not a local file or folder, and {reason}; "
                             "give a local folder (or a .gguf file for an LLM) instead")
