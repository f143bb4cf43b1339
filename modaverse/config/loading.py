"""Reading configs: packaged names or paths, ``base:`` chains, zoo presets, paths, ``--set`` overrides.

Relative paths inside a YAML file are resolved against that file's folder, never the working
directory; a packaged config is addressed by name (``--config tiny``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modaverse.config import SHAPING, Config
from modaverse.core.errors import ConfigError
from modaverse.core.strict import reason

#: Dotted keys holding file paths, resolved against the YAML file's folder.
PATH_KEYS = ("encoder.weights", "encoder.tower_weights", "encoder.text_tokenizer", "llm.model", "checkpoint", "bind.pairs", "train.data", "train.eval_data", "train.feature_cache", "zoo_train.init_from",
             "eval.inception_weights", "eval.panns_weights", "eval.clip_model")


def config_summary(name: str) -> str:
    """The first line of a packaged config's leading comment: what the profile is for."""
    text = (resources.files("modaverse.configs") / f"{name}.yaml").read_text()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip("# ").rstrip(":").strip() if first.startswith("#") else ""


def launch_configs() -> list[tuple[str, str]]:
    """The ``accelerate launch`` configs shipped beside the profiles, each with its header's
    ``# status:`` line: whether anything has run it, so none ships unrun without saying so."""
    root = resources.files("modaverse.configs") / "accelerate"
    out = []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.endswith(".yaml"):
            lines = p.read_text().splitlines()
            status = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("# status:")), "")
            out.append((f"configs/accelerate/{p.name}", status or "status not stated"))
    return out


def list_configs() -> list[str]:
    root = resources.files("modaverse.configs")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _locate(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if isinstance(name_or_path, str) and "/" not in name_or_path and not path.suffix:
        packaged = resources.files("modaverse.configs") / f"{name_or_path}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(f"{name_or_path}: no such config file or packaged config (packaged: {', '.join(list_configs())})")


def list_zoo_presets() -> list[str]:
    root = resources.files("modaverse.configs") / "zoo"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_mapping(path: Path, what: str) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what}")
    return raw


def _expand_zoo(raw: dict, base: Path, origin: str) -> None:
    """``zoo: NAME`` (a packaged preset in configs/zoo/) or ``zoo: path.yaml`` becomes that mapping."""
    name = raw.get("zoo")
    if not isinstance(name, str):
        return
    path = (base / name).expanduser()
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        packaged = resources.files("modaverse.configs") / "zoo" / f"{name}.yaml"
        if "/" in name or not packaged.is_file():
            raise ConfigError(f"{origin}: zoo: {name!r} is neither a zoo preset ({', '.join(list_zoo_presets())}) "
                              "nor a YAML file")
        path = Path(str(packaged))
    preset = _read_mapping(path, "a zoo preset maps capabilities to generators")
    for entry in preset.values():  # local model folders in a preset resolve against the preset's folder
        if isinstance(entry, dict) and isinstance(entry.get("model"), str) and entry["model"].startswith("."):
            entry["model"] = str((path.parent / entry["model"]).resolve())
    raw["zoo"] = preset


def _resolve_paths(raw: dict, base: Path) -> None:
    for key in PATH_KEYS:
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if isinstance(node.get(leaf), dict):  # a mapping of paths (encoder.tower_weights)
            node[leaf] = {k: _resolve_path(v, base) if isinstance(v, str) else v for k, v in node[leaf].items()}
        elif isinstance(node.get(leaf), str):
            node[leaf] = _resolve_path(node[leaf], base)


def _resolve_path(value: str, base: Path) -> str:
    if "://" in value or value.startswith("~"):
        return os.path.expanduser(value)
    if value.startswith((".", "/")) or (base / value).exists():
        return str((base / value).resolve())
    return value


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. encoder.device=cpu")
    key, _, value = item.partition("=")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def _apply(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for depth, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item}: {'.'.join(keys[: depth + 1])} is not a section")
        node = nxt
    node[keys[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_layered(path: Path, seen: tuple[Path, ...]) -> dict:
    """A config file with its ``base:`` chain merged under it; each file's paths resolved against its folder."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base: configs extend each other in a loop")
    raw = _read_mapping(path, "top level must be a mapping of sections")
    _resolve_paths(raw, path.parent)
    _expand_zoo(raw, path.parent, str(path))
    base = raw.get("base")
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a config name or path")
    local = path.parent / base
    parent = _read_layered(local if local.is_file() else _locate(base), (*seen, path.resolve()))
    return _merge(parent, raw)


def _moved_towers(stored: dict, own: dict) -> dict:
    """A checkpoint records the absolute path of its encoder's tower files; a checkpoint shipped with the
    package (or copied elsewhere) outlives that path. Then the config's own tower files stand in."""
    towers = stored.get("tower_weights")
    paths = list(towers.values()) if isinstance(towers, dict) else [towers] if isinstance(towers, str) else []
    if not paths or all(Path(p).exists() for p in paths) or not own.get("tower_weights"):
        return stored
    import logging

    logging.getLogger("modaverse").info("the checkpoint's encoder.tower_weights (%s) are not here; using the "
                                        "config's (%s)", towers, own["tower_weights"])
    return {k: v for k, v in stored.items() if k != "tower_weights"}


def load_config(name_or_path: str | os.PathLike = "tiny", overrides: list[str] = (), *,
                checkpoint: str | os.PathLike | None = None, shaped: dict | None = None) -> Config:
    """Reads a YAML config (name or path), applies ``KEY=VALUE`` overrides, validates.

    With ``checkpoint``, the model-shaping settings that checkpoint was trained with
    (``shaped``, read from its manifest) replace the config's, and the checkpoint becomes the
    config's; explicit overrides still come last and win.
    """
    path = _locate(name_or_path)
    raw = _read_layered(path, ())
    if checkpoint is not None:
        for section, values in (shaped or {}).items():
            if section in SHAPING and isinstance(values, dict):
                values = _moved_towers(values, raw.get(section) or {}) if section == "encoder" else values
                raw[section] = {**(raw.get(section) or {}), **values}
        raw["checkpoint"] = str(checkpoint)
    try:
        Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {reason(e)}") from None
    for item in overrides:
        keys, value = parse_override(item)
        _apply(raw, keys, value, item)
        _expand_zoo(raw, Path.cwd(), f"--set {item}")
        try:
            Config.model_validate(raw)
        except ValidationError as e:
            if e.errors()[0]["loc"]:  # a check across sections may need the overrides after this one
                raise ConfigError(f"--set {item}: {reason(e)}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        given = " ".join(f"--set {item}" for item in overrides)
        raise ConfigError(f"{path} with {given}: {reason(e)}") from None
