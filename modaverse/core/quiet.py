"""Silences library chatter (resize notices, deprecations, dtype hints) that users cannot act on.

Errors still surface; only the informational logging of transformers and diffusers and
their FutureWarnings are muted for the duration of a model load.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    loggers = [hf_logging]
    try:
        from diffusers.utils import logging as df_logging

        loggers.append(df_logging)
    except ImportError:
        pass
    levels = [lg.get_verbosity() for lg in loggers]
    bars = [lg.is_progress_bar_enabled() for lg in loggers]
    for lg in loggers:
        lg.set_verbosity_error()
        lg.disable_progress_bar()  # "Loading weights" flashes by for every model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level, bar in zip(loggers, levels, bars, strict=True):
            lg.set_verbosity(level)
            if bar:
                lg.enable_progress_bar()
