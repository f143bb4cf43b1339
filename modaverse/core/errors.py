"""User-facing errors: the CLI prints ``str(err)`` as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class ModaverseError(Exception):
    """An error caused by the user's input, config or files, not by a bug."""


class MediaError(ModaverseError):
    """A media file that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def one_line(err: BaseException) -> str:
    """An unexpected failure (not a ModaverseError) as one line: its type and first message line."""
    text = str(err).splitlines()[0] if str(err) else "failed"
    return f"{type(err).__name__}: {text}"


class ConfigError(ModaverseError):
    """A config file or override that does not validate; names the file and the key."""


class WeightsError(ModaverseError):
    """A checkpoint that does not match the model it is loaded into."""


def key_mismatch(model: dict, file: dict, limit: int = 6) -> list[str]:
    """What keeps ``file``'s tensors from loading into ``model``'s (both name -> tensor): missing,
    unexpected and mis-shaped keys, each listed, so a :class:`WeightsError` can name them."""

    def listing(keys: list[str], n: int = limit) -> str:
        shown = ", ".join(keys[:n])
        return f"{shown}, ... ({len(keys)} in all)" if len(keys) > n else shown

    missing, unexpected = sorted(set(model) - set(file)), sorted(set(file) - set(model))
    shapes = [f"{k} {list(file[k].shape)} vs {list(model[k].shape)}" for k in sorted(set(model) & set(file))
              if tuple(file[k].shape) != tuple(model[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch (checkpoint vs model): {listing(shapes, 3)}")
    return parts
