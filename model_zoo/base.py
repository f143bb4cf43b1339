"""The generator contract, and the diffusers-backed base the built-in plug-ins share.

A generator turns a prompt (plus bounded parameters, and the turn's inputs for editing
models) into files. It is loaded lazily by the :class:`~model_zoo.zoo.Zoo` and can be
unloaded to make room for another. Third-party packages add generators by exposing a
class with this shape in the ``modaverse.model_zoo`` entry-point group.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from modaverse.config import GeneratorConfig
from modaverse.core.device import DTYPES, pick_device
from modaverse.core.errors import ConfigError, ModaverseError
from modaverse.core.quiet import quiet
from modaverse.media import MediaInput

log = logging.getLogger("modaverse")

#: Options every plug-in understands (their bounds come from modaverse.meta.schema.RenderParams).
COMMON_OPTIONS = frozenset({"seed", "steps", "guidance", "negative_prompt"})


@runtime_checkable
class Generator(Protocol):
    """What the zoo needs from a plug-in."""

    name: ClassVar[str]
    options: ClassVar[frozenset[str]]

    def __init__(self, capability: str, config: GeneratorConfig): ...

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...

    def render(self, prompt: str, params: dict[str, Any], out_dir: Path,
               inputs: Sequence[MediaInput] = ()) -> list[Path]: ...

    def unload(self) -> None: ...

    def memory_bytes(self) -> int: ...


def _looks_local(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


class DiffusersGenerator:
    """A diffusers pipeline: from_pretrained (or a subclass's own build), dtype, device, offload, scheduler."""

    name: ClassVar[str] = ""
    pipeline: ClassVar[str] = ""  # diffusers class used by from_pretrained
    options: ClassVar[frozenset[str]] = COMMON_OPTIONS
    needs_model: ClassVar[bool] = True  # False for generators built from config (the tiny kit's)

    def __init__(self, capability: str, config: GeneratorConfig):
        if config.model is None and self.needs_model:
            raise ModaverseError(f"zoo.{capability}.model: give a hub id or folder ({self.name} loads a checkpoint)")
        self.capability, self.config = capability, config
        if config.scheduler:  # checked now, not at the first render in the middle of a chat
            import diffusers

            if not hasattr(getattr(diffusers, config.scheduler, None), "from_config"):
                raise ConfigError(f"zoo.{capability}.scheduler: {config.scheduler!r} is not a diffusers scheduler class")
        self.pipe = None
        self.device = None

    # -- loading --------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def _from_pretrained(self, dtype: torch.dtype):
        import diffusers

        model = self.config.model
        where = f"zoo.{self.capability}.model {model}"
        try:
            return getattr(diffusers, self.pipeline).from_pretrained(str(Path(model).expanduser())
                                                                    if _looks_local(model) else model,
                                                                    torch_dtype=dtype)
        except (OSError, ValueError) as e:
            raise ModaverseError(f"{where}: cannot load ({str(e).splitlines()[0]})") from None

    def _check_source(self) -> None:
        """A missing folder, or a hub id with no reachable hub, is one line before any work."""
        model = self.config.model
        if model is None:
            return
        if _looks_local(model):
            if not Path(model).expanduser().is_dir():
                raise ModaverseError(f"zoo.{self.capability}.model {model}: no such folder")
            return
        from modaverse.core import hub

        hub.require(f"zoo.{self.capability}.model", model, "model_index.json")

    def load(self) -> None:
        if self.pipe is not None:
            return
        self._check_source()
        self.device = pick_device(self.config.device)
        dtype = DTYPES[self.config.dtype]
        if self.device.type == "cpu" and dtype == torch.float16:
            log.warning("zoo.%s: float16 is not supported well on CPU; loading in float32", self.capability)
            dtype = torch.float32
        t = time.perf_counter()
        with quiet():
            pipe = self._from_pretrained(dtype)
        if self.config.scheduler:
            import diffusers

            pipe.scheduler = getattr(diffusers, self.config.scheduler).from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        if self.config.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.config.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self.pipe = pipe
        log.info("loaded %s for %s in %.1f s", self.name, self.capability, time.perf_counter() - t)

    def unload(self) -> None:
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def memory_bytes(self) -> int:
        if self.pipe is None:
            return 0
        return sum(p.numel() * p.element_size() for c in self.pipe.components.values()
                   if isinstance(c, torch.nn.Module) for p in c.parameters())

    # -- rendering ------------------------------------------------------------------------------
    def check_inputs(self, prompt: str, params: dict[str, Any], inputs: Sequence[MediaInput] = ()) -> None:
        """Refuses a request this generator cannot serve before its weights load (the zoo calls it
        first when a plug-in has it); raises ModaverseError."""

    def common_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if "steps" in params:
            kwargs["num_inference_steps"] = params["steps"]
        if "guidance" in params:
            kwargs["guidance_scale"] = params["guidance"]
        if params.get("negative_prompt"):
            kwargs["negative_prompt"] = params["negative_prompt"]
        for key in ("width", "height"):
            if key in params:
                kwargs[key] = params[key]
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(int(params["seed"]))
        return kwargs

    def render(self, prompt: str, params: dict[str, Any], out_dir: Path,
               inputs: Sequence[MediaInput] = ()) -> list[Path]:
        raise NotImplementedError
