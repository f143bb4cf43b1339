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
