"""FSDP2 for the alignment model: ``fully_shard`` on each decoder layer and at the root.

accelerate applies FSDP only on accelerators. On CPUs a launch with ``configs/accelerate/fsdp.yaml``
quietly becomes plain data parallel (``MULTI_CPU``), so a CPU run would prove nothing about the
sharded path. The recipe therefore shards the model itself, with torch's own ``fully_shard``,
whenever the launcher asks for FSDP (``accelerate launch`` sets ``ACCELERATE_USE_FSDP`` from the
config file): the path CI runs on CPUs over gloo is the path GPUs run. The config file's
``fsdp_reshard_after_forward`` and ``fsdp_offload_params`` are honoured; its mixed precision becomes
a ``MixedPrecisionPolicy`` (parameters in bf16/fp16, gradients reduced in fp32).

Checkpoints stay the project's own: the trainable tensors gathered whole (what a single process
loads), and the optimiser's state gathered whole into ``optimizer.pt`` so a run resumes on any
number of processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from modaverse.core.errors import ModaverseError

#: Where a step checkpoint keeps the gathered optimiser state of a sharded run.
OPTIMIZER_FILE = "optimizer.pt"


def check_launch(acc) -> bool:
    """Refuses a launch accelerate would quietly run as something else; whether the model is to be
    sharded (several processes, and the launcher asked for FSDP with
    ``accelerate launch --config_file configs/accelerate/fsdp.yaml``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed and (acc.distributed_type.value != "DEEPSPEED" or acc.num_processes != world):
        raise ModaverseError("the accelerate config asks for DeepSpeed, which accelerate runs only on GPUs (on CPUs it "
                             "either drops DeepSpeed or starts processes that never join); on CPUs use "
                             "configs/accelerate/fsdp.yaml or ddp.yaml (docs/training.md)")
    if acc.num_processes != world:
        raise ModaverseError(f"the launcher started {world} processes but accelerate joined {acc.num_processes}; on "
                             "CPUs set ACCELERATE_USE_CPU=1 (docs/training.md)")
    if acc.num_processes == 1 or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    if os.environ.get("FSDP_VERSION", "2") != "2":
        raise ModaverseError(f"fsdp_version {os.environ['FSDP_VERSION']}: modaverse shards with FSDP2 "
                             "(torch's fully_shard); set fsdp_version: 2 in the accelerate config")
    return True


def drop_unused_gradients(adaptors: nn.Module, used: set[str]) -> None:
    """A single process leaves no gradient on the adaptor of a modality its batch lacked, so AdamW
    leaves it alone. FSDP2 reduces gradients only where every process holds one, so the model adds
    every adaptor parameter at weight zero; here the adaptors no process used in this step get
    their gradients taken back (a collective)."""
    import torch.distributed as dist

    flags = torch.tensor([float(m in used) for m in adaptors.modalities])
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    anywhere = {m for m, f in zip(adaptors.modalities, flags.tolist(), strict=True) if f}
    for m in adaptors.modalities:
        if m not in anywhere and not any(adaptors.projector(o) is adaptors.projector(m) for o in anywhere):
            for p in adaptors.projector(m).parameters():
                p.grad = None


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() == "true"


def shard(model: nn.Module, mixed_precision: str) -> nn.Module:
    """Shards each transformer layer (the LLM's ``_no_split_modules`` classes, accelerate's
    TRANSFORMER_BASED_WRAP) and then the root, which holds the adaptors and embeddings."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    options: dict = {"reshard_after_forward": _flag("FSDP_RESHARD_AFTER_FORWARD", True)}
    if mixed_precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    if _flag("FSDP_OFFLOAD_PARAMS", False):
        options["offload_policy"] = CPUOffloadPolicy()
    layers = set(getattr(_base(model), "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in layers:
            fully_shard(module, **options)
    fully_shard(model, **options)
    return model


def _base(model: nn.Module) -> nn.Module:
    """The transformers model inside the alignment model (under peft's wrapper when LoRA trains)."""
    llm = model.llm
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def full_state(model: nn.Module, names) -> dict[str, torch.Tensor]:
    """``names``' tensors (parameters, or buffers, which stay whole) gathered whole on every process
    (a collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    wanted = set(names)
    out = {}
    for name, param in [*model.named_parameters(), *model.named_buffers()]:
        if name in wanted:
            full = param.full_tensor() if isinstance(param, DTensor) else param
            out[name] = full.detach().float().cpu().clone()
    missing = wanted - out.keys()
    if missing:
        raise ModaverseError(f"sharded model has no parameter {sorted(missing)[0]}; this is a bug, please report it")
    return out


def save_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, main: bool) -> None:
    """The optimiser's state, gathered whole on the main process (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer,
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if main:
        torch.save(state, folder / OPTIMIZER_FILE)


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Each process reads the whole state and keeps its own shards of it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    path = folder / OPTIMIZER_FILE
    if not path.is_file():
        raise ModaverseError(f"{folder}: no {OPTIMIZER_FILE}; the run was not sharded (FSDP), so resume it with the "
                             "launcher it started with")
    state = torch.load(path, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True, strict=False))  # adaptors never used yet have no state
