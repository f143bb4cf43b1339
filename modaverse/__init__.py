"""modaverse: an any-to-any multimodal assistant (ModaVerse + PandaGPT, re-built openly).

The public API is small and imported lazily, so ``modaverse --help`` does not pay for torch:

- :func:`load_config` - validated YAML configs with ``--set``-style overrides
- :func:`load_media` - any supported file -> ImageBind tower input
- :class:`Encoder` - files -> ImageBind embeddings
- :class:`ImageBind` - the native, checkpoint-compatible encoder module
- :class:`Adaptors` - embeddings -> LLM soft tokens
- :class:`ModaVerse` - the assistant: instruction + inputs -> :class:`Turn`
- :class:`MetaResponse` - the validated reply + invocations the LLM emits
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "modaverse.config",
    "Config": "modaverse.config",
    "load_media": "modaverse.media",
    "Encoder": "modaverse.encoder.embed",
    "ImageBind": "modaverse.encoder.imagebind.model",
    "Adaptors": "modaverse.adaptors",
    "ModaVerse": "modaverse.pipeline.assistant",
    "Turn": "modaverse.pipeline.assistant",
    "MetaResponse": "modaverse.meta.schema",
}

if TYPE_CHECKING:
    from modaverse.adaptors import Adaptors
    from modaverse.config import Config, load_config
    from modaverse.encoder.embed import Encoder
    from modaverse.encoder.imagebind.model import ImageBind
    from modaverse.media import load_media
    from modaverse.meta.schema import MetaResponse
    from modaverse.pipeline.assistant import ModaVerse, Turn

__all__ = ["Adaptors", "Config", "Encoder", "ImageBind", "MetaResponse", "ModaVerse", "Turn", "__version__",
           "load_config", "load_media"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modaverse' has no attribute {name!r}")
