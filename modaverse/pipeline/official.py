"""``modaverse import-checkpoint``: the official ModaVerse-7b-v0 release -> our checkpoint format.

The release is one torch pickle, ``pytorch_model.pt``, of every parameter that had
``requires_grad`` (see the reference notes):

- ``linear_proj.weight`` / ``.bias``: ONE projection shared by every modality;
- ``LLM.base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}[.default].weight``:
  LoRA r32, with or without the adapter name depending on the peft version that saved it;
- ``LLM.base_model.model.model.embed_tokens.weight`` and ``LLM.base_model.model.lm_head.weight``
  (32006 rows): trained whole, because the code unfroze them to learn six added tokens
  (``<Media>``, ``</Media>``, ``[TEXT]``, ``[IMAGE]``, ``[AUDIO]``, ``[VIDEO]``, ids 32000-32005).

Our layout gives each modality its own adaptor and marker pair, so the shared projection is
copied to every configured modality, and each modality's opening/closing marker row starts
from the trained ``<Media>``/``</Media>`` rows. The four flag rows (embedding and LM head)
are kept in ``official_tokens.safetensors`` next to the checkpoint. The rest of the
full-matrix embedding/LM-head training is not representable as LoRA and is left out.

Loading is by name with a strict check on both sides: every key of the release must be
used (or be one of the known full matrices) and every tensor of our checkpoint must be
filled, or the import fails naming the keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from modaverse import checkpoint
from modaverse.config import Config
from modaverse.core.errors import WeightsError
from modaverse.encoder.imagebind.config import ImageBindConfig

ADDED_TOKENS = ("<Media>", "</Media>", "[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]")
FULL_MATRICES = ("LLM.base_model.model.model.embed_tokens.weight", "LLM.base_model.model.lm_head.weight")
_LORA = re.compile(r"^LLM\.(base_model\.model\..+\.lora_[AB])(?:\.default)?\.weight$")


def read_release(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a pickle of the wrong kind, a truncated file, ...
        raise WeightsError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or "linear_proj.weight" not in state:
        raise WeightsError(f"{path}: not the ModaVerse release layout (no linear_proj.weight)")
    return state


def convert(state: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
            marker_ids: dict[str, int], modalities: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Release tensors -> our tensor names (``targets`` gives names and shapes); returns (tensors, report)."""
    from modaverse.core.modality import markers

    out: dict[str, torch.Tensor] = {}
    used = set()
    for name in targets:
        if name.startswith("adaptor.projectors."):
            _, _, rest = name.partition("adaptor.projectors.")
            _, _, leaf = rest.partition(".")
            src = f"linear_proj.{leaf}"
            if src not in state:
                raise WeightsError(f"the release has no {src} for {name} (the adaptor must be `projector: linear`)")
            out[name] = state[src].clone()  # one copy per modality: they train apart from here
            used.add(src)
    for key, value in state.items():
        m = _LORA.match(key)
        if m:
            name = f"llm.{m.group(1)}.default.weight"
            if name not in targets:
                raise WeightsError(f"release key {key} has no place in this model ({name}); check llm.lora")
            out[name] = value
            used.add(key)
    rows = [n for n in targets if n.endswith("embed_tokens.rows")]
    embed = state.get(FULL_MATRICES[0])
    if rows:
        if embed is None or embed.shape[0] <= len(ADDED_TOKENS):
            raise WeightsError(f"the release has no {FULL_MATRICES[0]} with the added <Media> rows")
        media_open, media_close = embed[-len(ADDED_TOKENS)], embed[-len(ADDED_TOKENS) + 1]
        ordered = sorted(marker_ids.items(), key=lambda kv: kv[1])
        opening = {markers(m)[0] for m in modalities}
        out[rows[0]] = torch.stack([media_open if tok in opening else media_close for tok, _ in ordered])
    used.update(k for k in FULL_MATRICES if k in state)
    unused = sorted(set(state) - used)
    if unused:
        raise WeightsError(f"release keys not understood: {', '.join(unused[:4])}"
                           + (f" (+{len(unused) - 4} more)" if len(unused) > 4 else ""))
    missing = sorted(set(targets) - set(out) - {n for n in targets if ".standardizers." in n})
    if missing:
        raise WeightsError(f"nothing in the release for: {', '.join(missing[:4])}"
                           + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
    for name, value in out.items():
        if tuple(value.shape) != tuple(targets[name].shape):
            raise WeightsError(f"{name}: release shape {list(value.shape)}, model shape {list(targets[name].shape)}")
    for name in targets:  # statistics buffers (none unless adaptor.standardize) keep their identity values
        out.setdefault(name, targets[name])
    report = {"lora_tensors": sum(".lora_" in n for n in out), "adaptors": sorted(
        {n.split(".")[2] for n in out if n.startswith("adaptor.projectors.")}), "marker_rows": len(marker_ids)}
    return {k: v.to(targets[k].dtype) for k, v in out.items()}, report


def import_checkpoint(source: str | Path, out: Path, config: Config) -> str:
    """Converts and writes a checkpoint folder for ``config``; returns a one-paragraph report."""
    from safetensors.torch import save_file

    from modaverse.pipeline.assistant import build_trainable

    state = read_release(source)
    dim = ImageBindConfig.from_encoder(config.encoder).out_embed_dim
    if tuple(state["linear_proj.weight"].shape)[1] != dim:
        raise WeightsError(f"{source}: linear_proj takes {state['linear_proj.weight'].shape[1]}-d features, "
                           f"but encoder {config.encoder.arch} gives {dim}-d")
    llm, adaptors = build_trainable(config.model_copy(update={"checkpoint": None}), dim)
    targets = {k: v.detach() for k, v in checkpoint.trainable_tensors(adaptors, llm.model).items()}
    tensors, report = convert(state, targets, llm.marker_ids, list(config.encoder.modalities))
    extra = {"imported_from": str(Path(source).name), "official_added_tokens": list(ADDED_TOKENS)}

    def fill(folder: Path) -> None:
        checkpoint.write(folder, tensors, config, step=0, tokenizer_json=llm.tokenizer_json, extra=extra)
        flags = {}
        for key, label in zip(FULL_MATRICES, ("embed_tokens", "lm_head"), strict=True):
            if key in state:
                flags[label] = state[key][-len(ADDED_TOKENS):].contiguous()
        if flags:
            save_file(flags, str(folder / "official_tokens.safetensors"), metadata={"rows": ",".join(ADDED_TOKENS)})

    checkpoint.write_folder(out, fill)
    return (f"wrote {out}: {report['lora_tensors']} LoRA tensors, the shared projection copied to "
            f"{', '.join(report['adaptors'])}, {report['marker_rows']} marker rows from <Media>/</Media>; "
            f"the six added token rows are kept in {out / 'official_tokens.safetensors'}")
