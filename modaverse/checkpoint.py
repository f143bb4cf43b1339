"""Trained-weights checkpoints: only what training changed, written atomically, loaded strictly.

A checkpoint folder holds:

- ``weights.safetensors``: the trainable tensors and nothing else (adaptors, LoRA, the
  marker-token rows; with ``trainable.llm: full``, the whole LLM), named ``adaptor.*`` and
  ``llm.*`` after the parameters of the modules they load into;
- ``manifest.json``: format version, step, the base models it applies to, the trainable
  parts, the hash of the config sections that shape the model, and every tensor's shape;
- ``tokenizer.json`` when the LLM's tokenizer was built in code (the tiny profile), so a
  checkpoint keeps working if the tokenizer trainer changes.

The research release saved a 2.4 GB pickle of everything with ``requires_grad`` and loaded it
with ``strict=False``, so a wrong key failed silently. Here a missing, unexpected or
mis-shaped tensor is an error that names the keys. A training run folder is accepted too:
its ``final`` checkpoint, else the one its ``latest`` file points at.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from modaverse.config import Config, load_config, shaping
from modaverse.core.atomic import json_text, write_folder
from modaverse.core.errors import WeightsError, key_mismatch

log = logging.getLogger("modaverse")

FORMAT = "modaverse-checkpoint/1"
WEIGHTS, MANIFEST, TOKENIZER = "weights.safetensors", "manifest.json", "tokenizer.json"
FINAL, LATEST = "final", "latest"


def trainable_tensors(adaptors: nn.Module, llm_model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds, under their checkpoint names: trainable parameters,
    plus the adaptors' fitted statistics (buffers)."""
    out: dict[str, torch.Tensor] = {f"adaptor.{n}": b for n, b in adaptors.named_buffers()}
    for prefix, module in (("adaptor", adaptors), ("llm", llm_model)):
        for name, p in module.named_parameters():
            if p.requires_grad:
                out[f"{prefix}.{name}"] = p
    return out


def structure_hash(config: Config) -> str:
    """Hash of the config sections that decide which tensors exist and what they mean."""
    parts = {
        "encoder": config.encoder.model_dump(include={"arch", "kwargs", "modalities"}),
        "adaptor": config.adaptor.model_dump(),
        "llm": config.llm.model_dump(include={"model", "arch", "lora"}),
        "compose": config.prompt.compose,
        "trainable": config.trainable.model_dump(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint, step or run folder."""
    path = Path(path).expanduser()
    if (path / MANIFEST).is_file():
        return path
    if (path / FINAL / MANIFEST).is_file():
        return path / FINAL
    if (path / LATEST).is_file():
        step = path / (path / LATEST).read_text().strip()
        if (step / MANIFEST).is_file():
            return step
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint folder")
    raise WeightsError(f"{path}: not a checkpoint (no {MANIFEST}) nor a training run (no {FINAL}/ or {LATEST})")


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"{folder / MANIFEST}: unreadable ({e})") from None
    if manifest.get("format") != FORMAT:
        raise WeightsError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def saved_tokenizer(path: str | os.PathLike) -> str | None:
    """The in-code tokenizer a checkpoint was trained with (tokenizer JSON), if it has one."""
    tok = resolve(path) / TOKENIZER
    return tok.read_text(encoding="utf-8") if tok.is_file() else None


def manifest_for(config: Config, tensors: dict[str, torch.Tensor], step: int, extra: dict | None = None) -> dict:
    from modaverse import __version__

    return {
        "format": FORMAT,
        "step": step,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "modaverse": __version__,
        "base": {"llm": config.llm.model or "arch (built from config)", "encoder": config.encoder.arch,
                 "encoder_weights": Path(config.encoder.weights).name if config.encoder.weights else None},
        "trainable": config.trainable.model_dump(),
        "structure_hash": structure_hash(config),
        "config": shaping(config),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        **(extra or {}),
    }


def write(folder: Path, tensors: dict[str, torch.Tensor], config: Config, *, step: int,
          tokenizer_json: str | None = None, extra: dict | None = None) -> None:
    """Writes weights, manifest (and tokenizer) into an existing folder."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})
    (folder / MANIFEST).write_text(json_text(manifest_for(config, tensors, step, extra)))
    if tokenizer_json is not None:
        (folder / TOKENIZER).write_text(tokenizer_json, encoding="utf-8")


def save(out: str | os.PathLike, tensors: dict[str, torch.Tensor], config: Config, *, step: int,
         tokenizer_json: str | None = None, extra: dict | None = None) -> Path:
    """A checkpoint folder, written atomically (see :func:`trainable_tensors` for ``tensors``)."""
    out = Path(out)
    write_folder(out, lambda tmp: write(tmp, tensors, config, step=step, tokenizer_json=tokenizer_json, extra=extra))
    return out


def config_for(path: str | os.PathLike, name_or_path: str | os.PathLike = "tiny",
               overrides: list[str] = ()) -> Config:
    """``name_or_path`` with the model-shaping settings of the checkpoint at ``path`` (and
    ``overrides`` last): what ``--checkpoint RUN`` and ``ModaVerse.from_pretrained`` build."""
    folder = resolve(path)
    shaped = read_manifest(folder).get("config")
    return load_config(name_or_path, list(overrides), checkpoint=Path(path).expanduser().resolve(), shaped=shaped)


def _llm_name(llm: dict) -> str:
    return llm.get("model") or "a model built from llm.arch"


def check_llm(folder: Path, manifest: dict, config: Config) -> None:
    """A checkpoint's LoRA, marker rows and adaptors mean nothing on another LLM: say so in one line."""
    saved = (manifest.get("config") or {}).get("llm")
    if saved is None:  # written before checkpoints described themselves: the base name is all there is
        base = manifest.get("base", {}).get("llm")
        if config.llm.model and base and Path(base).name != Path(config.llm.model).name:
            saved = {"model": base}
        else:
            return
    ours = config.llm.model_dump(mode="json", include={"model", "arch"})
    theirs, mine = saved.get("model"), ours["model"]
    if theirs and mine:
        same = theirs == mine or Path(theirs).name == Path(mine).name  # a moved folder is the same model
    else:
        same = theirs is None and mine is None and saved.get("arch", ours["arch"]) == ours["arch"]
    if same:
        return
    raise WeightsError(f"{folder}: trained for {_llm_name(saved)}, but the config's LLM is {_llm_name(ours)}; "
                       "drop the checkpoint (--set checkpoint=null) or train one for this LLM")


def load(path: str | os.PathLike, adaptors: nn.Module, llm_model: nn.Module, config: Config) -> dict:
    """Loads a checkpoint into the modules, strictly; returns its manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve(path)
    manifest = read_manifest(folder)
    check_llm(folder, manifest, config)
    if manifest.get("trainable") != config.trainable.model_dump():
        raise WeightsError(f"{folder}: trained with trainable={manifest.get('trainable')}, but the config has "
                           f"trainable={config.trainable.model_dump()}; use the run's trainable settings")
    try:
        state = load_file(str(folder / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{folder / WEIGHTS}: unreadable ({e})") from None
    params = trainable_tensors(adaptors, llm_model)
    problems = key_mismatch(params, state, limit=4)
    if problems:
        hint = "" if manifest.get("structure_hash") == structure_hash(config) else \
            " (the config's encoder/adaptor/llm settings differ from the run's)"
        raise WeightsError(f"{folder}: does not fit this model: {'; '.join(problems)}{hint}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k].to(p.dtype))
    return manifest
