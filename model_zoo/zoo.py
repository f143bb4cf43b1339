"""The zoo: capability -> generator, loaded on first use, kept in a least-recently-used set.

The research code loads all three generators onto the GPU at start-up (40 GB or more).
Here nothing loads until a capability is first rendered; at most ``render.max_resident``
generators stay loaded, and fewer when their weights exceed ``render.memory_budget_gb``.
A generator that fails reports its error in the turn while the others still render.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modaverse.config import Config, GeneratorConfig, RenderConfig
from modaverse.core.errors import ConfigError, ModaverseError, one_line
from modaverse.media import MediaInput
from modaverse.media.writers import write_sidecar
from modaverse.meta.schema import MAX_PROMPT_CHARS, Invocation, RenderParams
from model_zoo.registry import load_plugin

log = logging.getLogger("modaverse")

#: Options beyond RenderParams that configs (not the LLM) may set, with their checks.
EXTRA_OPTIONS = {
    "fps": lambda v: isinstance(v, int | float) and 1 <= v <= 60,
    "format": lambda v: v in ("mp4", "webm", "wav", "wav-float"),
    "negative_prompt": lambda v: isinstance(v, str) and len(v) <= MAX_PROMPT_CHARS,
    "image_guidance": lambda v: isinstance(v, int | float) and 0 <= v <= 30,
}


def check_params(capability: str, options: frozenset[str], params: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters: only the plug-in's options, each within its bounds."""
    unknown = sorted(set(params) - options)
    if unknown:
        raise ModaverseError(f"{capability} does not take {', '.join(map(repr, unknown))} "
                             f"(it takes: {', '.join(sorted(options))})")
    bounded = {k: v for k, v in params.items() if k in RenderParams.model_fields}
    try:
        RenderParams.model_validate(bounded)
    except ValidationError as e:
        err = e.errors()[0]
        raise ModaverseError(f"{capability}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for k, v in params.items():
        if k in EXTRA_OPTIONS and not EXTRA_OPTIONS[k](v):
            raise ModaverseError(f"{capability}: {k}: invalid value {v!r}")
    return params


@dataclass
class RenderResult:
    capability: str
    prompt: str
    files: list[Path] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


class Zoo:
    def __init__(self, generators: dict[str, Any], configs: dict[str, GeneratorConfig],
                 render: RenderConfig | None = None, seed: int = 0):
        self.generators, self.configs, self.seed = generators, configs, seed
        self.settings = render or RenderConfig()
        self._resident: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def from_config(cls, config: Config) -> Zoo:
        """Builds (does not load) every configured generator; bad entries fail here, not mid-chat."""
        generators = {}
        for capability, gen_config in config.zoo.items():
            try:
                plugin = load_plugin(gen_config.plugin)
            except ConfigError as e:
                raise ConfigError(f"zoo.{capability}.plugin: {e}") from None
            try:
                check_params(capability, plugin.options, dict(gen_config.defaults))
            except ModaverseError as e:
                raise ConfigError(f"zoo.{capability}.defaults: {e}") from None
            generators[capability] = plugin(capability, gen_config)
        return cls(generators, dict(config.zoo), config.render, config.seed)

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(self.generators)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for cap, gen in self.generators.items():
            c = self.configs[cap]
            rows.append({"capability": cap, "plugin": c.plugin, "model": c.model or "(built in code)",
                         "dtype": c.dtype, "device": c.device, "loaded": gen.loaded,
                         "memory_mb": round(gen.memory_bytes() / 2**20, 1)})
        return rows

    def residency(self) -> dict[str, Any]:
        """What stays loaded and its bounds (``render.max_resident``, ``render.memory_budget_gb``): a server's
        /healthz shows it."""
        return {"loaded": list(self._resident), "max_resident": self.settings.max_resident,
                "memory_budget_gb": self.settings.memory_budget_gb,
                "resident_mb": round(self._resident_bytes() / 2**20, 1)}

    # -- memory --------------------------------------------------------------------------------
    def _resident_bytes(self) -> int:
        return sum(self.generators[c].memory_bytes() for c in self._resident)

    def _make_room(self, keep: str) -> None:
        budget = self.settings.memory_budget_gb
        while self._resident:
            over_count = len(self._resident) >= self.settings.max_resident
            over_memory = budget is not None and self._resident_bytes() > budget * 2**30
            if not (over_count or over_memory):
                break
            victim = next(iter(self._resident))
            if victim == keep:
                break
            self._resident.pop(victim)
            self.generators[victim].unload()
            log.info("unloaded %s (least recently used)", victim)

    def _generator(self, capability: str):
        if capability not in self.generators:
            raise ModaverseError(f"no generator is configured for {capability!r} "
                                 f"(configured: {', '.join(self.generators) or 'none'}); add zoo.{capability}")
        return self.generators[capability]

    def acquire(self, capability: str):
        """The loaded generator for a capability, unloading others as the limits require."""
        gen = self._generator(capability)
        if capability in self._resident:
            self._resident.move_to_end(capability)
            return gen
        self._make_room(keep=capability)
        gen.load()
        self._resident[capability] = None
        return gen

    def unload_all(self) -> None:
        for cap in list(self._resident):
            self.generators[cap].unload()
        self._resident.clear()

    # -- rendering -----------------------------------------------------------------------------
    def render(self, capability: str, prompt: str, params: dict[str, Any], out_dir: Path,
               inputs: Sequence[MediaInput] = (), seed: int | None = None) -> list[Path]:
        """Renders one prompt; writes files and their JSON sidecars. Raises on failure."""
        gen = self._generator(capability)  # raises for an unconfigured capability
        merged = check_params(capability, gen.options, {**self.configs[capability].defaults, **params})
        merged.setdefault("seed", self.seed if seed is None else seed)
        if hasattr(gen, "check_inputs"):  # optional for plug-ins: before any weights load
            gen.check_inputs(prompt, merged, inputs)
        self.acquire(capability)  # loads it, unloading others as the limits require
        t = time.perf_counter()
        files = gen.render(prompt, merged, out_dir, inputs)
        took = time.perf_counter() - t
        info = {"capability": capability, "prompt": prompt, "params": merged, "seed": merged["seed"],
                "plugin": self.configs[capability].plugin,
                "model": self.configs[capability].model or "(built in code)",
                "seconds": round(took, 3)}
        for f in files:
            write_sidecar(f, {**info, "file": f.name})
        return files

    def render_invocations(self, invocations: Sequence[Invocation], out_dir: Path,
                           inputs: Sequence[MediaInput] = ()) -> list[RenderResult]:
        """Renders every invocation; one failing never stops the others."""
        results = []
        for n, inv in enumerate(invocations):
            res = RenderResult(inv.capability, inv.prompt)
            t = time.perf_counter()
            try:
                res.files = self.render(inv.capability, inv.prompt, inv.params.given(), out_dir, inputs,
                                        seed=self.seed + n)
            except ModaverseError as e:
                res.error = str(e)
            except Exception as e:  # a generator's own failure (OOM, bad weights) stays in its result
                res.error = one_line(e)
            res.seconds = time.perf_counter() - t
            if res.error:
                log.warning("%s failed: %s", inv.capability, res.error)
            results.append(res)
        return results
