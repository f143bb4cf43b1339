"""Device and dtype names as configs spell them, checked where they are read.

The encoder, the LLM, the generators and the evaluation extractors each have their own
``device``/``dtype`` keys; they all resolve them here.
"""

from __future__ import annotations

import torch

from modaverse.core.errors import ModaverseError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModaverseError(f"device {name!r} requested but CUDA is not available; use device: cpu")
    return torch.device(name)
