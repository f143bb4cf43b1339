"""Getting ImageBind weights into the native module: files, downloads, strict key checks.

The official ``imagebind_huge.pth`` is a plain state dict whose keys match
:class:`~modaverse.encoder.imagebind.model.ImageBind` one to one. Loading is strict for the towers
that were built (a mismatch lists the missing, unexpected and mis-shaped keys) and ignores
only the towers a config chose not to build. Downloads go to a ``.part`` file that is
checked (size, optional sha256) before it is renamed into place, so an interrupted
download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch

from modaverse.core.cachedir import cache_dir, sha256_of
from modaverse.core.errors import WeightsError, key_mismatch
from modaverse.encoder.imagebind.config import TOWER_NAMES
from modaverse.encoder.imagebind.model import ImageBind, tower_prefixes

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Fetches ``url`` to ``dest`` atomically; verifies length and (if given) sha256."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("MODAVERSE_OFFLINE") == "1":
        raise WeightsError(f"{dest}: missing, and downloads are disabled (HF_HUB_OFFLINE/MODAVERSE_OFFLINE); "
                           f"download {url} by hand and put it at {dest} (or point encoder.weights at it)")
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        size = part.stat().st_size
        if total and size != total:
            raise WeightsError(f"{url}: download stopped at {size} of {total} bytes")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise WeightsError(f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}")
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    except OSError as e:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url}: download failed ({e}); download it by hand and put it at {dest} "
                           "(or point encoder.weights at it)") from None
    os.replace(part, dest)
    return dest


def resolve_weights(weights: str, url: str | None = None, sha256: str | None = None) -> Path:
    """A local checkpoint path for ``weights`` (a path or URL), downloading when needed."""
    if "://" in weights:
        url, dest = weights, cache_dir() / Path(weights.split("?")[0]).name
    else:
        dest = Path(weights).expanduser()
    if dest.is_file():
        if sha256 and sha256_of(dest) != sha256.lower():
            raise WeightsError(f"{dest}: sha256 does not match the expected {sha256} (corrupt or different file)")
        return dest
    if url is None:
        raise WeightsError(f"{dest}: no such weights file")
    return download(url, dest, sha256)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated zip, bad header, pickle with code, ...
        raise WeightsError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: not a state dict")
    return sd


def load_into(model: ImageBind, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly loads the built towers' entries of ``state`` (``assign`` keeps meta-built models cheap)."""
    expected = model.state_dict()
    skipped = tower_prefixes(t for t in TOWER_NAMES if t not in model.towers)
    wanted = {k: v for k, v in state.items() if not k.startswith(skipped)}
    parts = key_mismatch(expected, wanted)
    if parts:
        raise WeightsError(f"{source}: weights do not match the encoder config; " + "; ".join(parts))
    model.load_state_dict(wanted, strict=True, assign=True)
    model.requires_grad_(False)
