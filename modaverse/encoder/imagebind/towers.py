"""One tower, one weights file: what ``modaverse bind`` writes and ``encoder.tower_weights`` loads.

A bound tower is loaded on top of a base (the official checkpoint, or seeded random weights),
so a user who binds a new thermal camera to ``imagebind_huge.pth`` ships a few hundred MB for
that tower, not 4.5 GB for all six. Each file holds exactly one tower's state-dict entries under
their checkpoint names, plus metadata: the format, the tower, the architecture it was trained
in, and for the text tower its tokenizer (so the tokens it was trained on travel with it).
Loading is strict: a file of another tower, another architecture or a missing key is an error
that names them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from modaverse.core.errors import WeightsError, key_mismatch
from modaverse.encoder.imagebind.config import TOWER_NAMES, ImageBindConfig
from modaverse.encoder.imagebind.model import ImageBind, tower_prefixes

FORMAT = "modaverse-imagebind-tower/1"


def tower_state(model: ImageBind, tower: str) -> dict[str, torch.Tensor]:
    prefixes = tower_prefixes([tower])
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def tower_metadata(config: ImageBindConfig, tower: str, tokenizer_json: str | None = None) -> dict[str, str]:
    meta = {"format": FORMAT, "tower": tower, "arch": json.dumps(config.model_dump(mode="json", exclude={"towers"}))}
    if tokenizer_json is not None:
        meta["tokenizer"] = tokenizer_json
    return meta


def save_tower(path: str | Path, model: ImageBind, tower: str, tokenizer_json: str | None = None) -> Path:
    from safetensors.torch import save_file

    from modaverse.core.atomic import write_atomic

    path = Path(path)
    tensors, meta = tower_state(model, tower), tower_metadata(model.config, tower, tokenizer_json)
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def tower_files(spec: str | Mapping[str, str] | None) -> dict[str, Path]:
    """``encoder.tower_weights`` as tower -> file: a folder means every ``<tower>.safetensors`` in it."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        bad = [t for t in spec if t not in TOWER_NAMES]
        if bad:
            raise WeightsError(f"encoder.tower_weights: unknown tower(s) {bad}; choose from {list(TOWER_NAMES)}")
        return {t: Path(p).expanduser() for t, p in spec.items()}
    folder = Path(spec).expanduser()
    if (folder / "final").is_dir():  # a `modaverse bind` run folder
        folder = folder / "final"
    if not folder.is_dir():
        raise WeightsError(f"encoder.tower_weights {folder}: no such folder (give a folder of <tower>.safetensors "
                           "files, such as a `modaverse bind` run, or a mapping tower: file)")
    found = {t: folder / f"{t}.safetensors" for t in TOWER_NAMES if (folder / f"{t}.safetensors").is_file()}
    if not found:
        raise WeightsError(f"encoder.tower_weights {folder}: holds no <tower>.safetensors file")
    return found


def read_tower(path: Path, tower: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"{path}: no such tower weights file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own errors for truncated or foreign files
        raise WeightsError(f"{path}: cannot read tower weights ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a tower weights file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("tower") != tower:
        raise WeightsError(f"{path}: holds the {meta.get('tower')} tower, not {tower}")
    return state, meta


def load_towers(model: ImageBind, files: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    """Loads each tower file over the model's weights, strictly; returns each file's metadata."""
    metas = {}
    current = model.state_dict()
    for tower, path in files.items():
        if tower not in model.towers:
            continue  # a tower the config does not build (its modalities are not used)
        state, meta = read_tower(path, tower)
        expected = {k: v for k, v in current.items() if k.startswith(tower_prefixes([tower]))}
        parts = key_mismatch(expected, state)
        if parts:
            arch = json.loads(meta.get("arch", "{}"))
            raise WeightsError(f"{path}: the {tower} tower does not fit the encoder architecture "
                               f"(trained with {_arch_diff(arch, model.config)}): " + "; ".join(parts))
        with torch.no_grad():
            for k, v in state.items():
                current[k].copy_(v)
        metas[tower] = meta
    return metas


def _arch_diff(arch: dict, config: ImageBindConfig) -> str:
    ours = config.model_dump(mode="json", exclude={"towers"})
    diff = [f"{k}={arch[k]} (here {ours.get(k)})" for k in sorted(arch) if arch[k] != ours.get(k)]
    return ", ".join(diff[:4]) or "the same settings"
