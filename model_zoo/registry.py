"""Plug-in names -> generator classes: the built-ins plus the ``modaverse.model_zoo`` entry points.

An installed package adds a generator with, in its ``pyproject.toml``::

    [project.entry-points."modaverse.model_zoo"]
    my-generator = "my_package.module:MyGenerator"

and configs then name it: ``zoo: {text-to-3d: {plugin: my-generator, model: ...}}``.
"""

from __future__ import annotations

import logging
from importlib import import_module
from importlib.metadata import entry_points

from modaverse.core.errors import ConfigError

log = logging.getLogger("modaverse")

ENTRY_POINT_GROUP = "modaverse.model_zoo"
BUILTIN = {
    "stable-diffusion": "model_zoo.stable_diffusion:StableDiffusion",
    "instruct-pix2pix": "model_zoo.instruct_pix2pix:InstructPix2Pix",
    "text-to-video-ms": "model_zoo.text_to_video:TextToVideoMS",
    "audioldm": "model_zoo.audioldm:AudioLDM",
    "audioldm2": "model_zoo.audioldm:AudioLDM2",
}
REQUIRED = ("name", "options", "load", "render", "unload", "memory_bytes")


def plugins() -> dict[str, str]:
    """Every known plug-in name and where it lives (``module:Class``)."""
    found = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            log.warning("plug-in %r from %s shadows a built-in and is ignored", ep.name, ep.value)
            continue
        found[ep.name] = ep.value
    return found


def load_plugin(name: str) -> type:
    known = plugins()
    if name not in known:
        raise ConfigError(f"unknown plug-in {name!r}; known: {', '.join(sorted(known))}")
    module, _, attr = known[name].partition(":")
    try:
        cls = getattr(import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"plug-in {name!r} ({known[name]}) cannot be imported: {e}") from None
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if missing:
        raise ConfigError(f"plug-in {name!r} ({known[name]}) is not a generator: it lacks {', '.join(missing)}")
    return cls
