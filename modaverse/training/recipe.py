"""``modaverse train``: one-stage I/O alignment of adaptors + LoRA, on accelerate.

Read top to bottom, like a torchtune recipe:

1. read and check the records (every media file exists) before any model is built;
2. encode every distinct media file once into the feature cache (main process only);
3. build the trainable parts as ``trainable:`` says, and tokenise every conversation once;
4. train: AdamW, warm-up then linear/cosine decay, gradient accumulation and clipping, with a
   data order that is a pure function of (seed, step), so a resumed run sees exactly the
   batches the uninterrupted one would have;
5. checkpoint atomically every ``save_every`` steps and at the end; check that all processes
   hold the same weights; score ``eval_data`` when given.

The launcher decides the parallelism: ``accelerate launch --config_file
configs/accelerate/ddp.yaml -m modaverse train ...`` (or fsdp.yaml, zero2.yaml); plain
``modaverse train`` runs one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from modaverse import checkpoint
from modaverse.atomic import write_json_atomic, write_text_atomic
from modaverse.config import Config
from modaverse.errors import ModaverseError

log = logging.getLogger("modaverse")

STEP_PREFIX = "step-"


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def stream(n: int, seed: int, start: int, count: int) -> list[int]:
    """Positions ``start .. start+count`` of an endless sequence of seeded per-epoch shuffles."""
    out = []
    while len(out) < count:
        epoch, offset = divmod(start + len(out), n)
        take = min(n - offset, count - len(out))
        out += _permutation(n, seed, epoch)[offset : offset + take]
    return out


@dataclass
class Plan:
    examples: int
    global_batch: int
    total_steps: int
    warmup_steps: int


def plan(config: Config, examples: int, processes: int) -> Plan:
    t = config.train
    global_batch = t.batch_size * t.grad_accum * processes
    total = t.max_steps or max(1, math.ceil(t.epochs * examples / global_batch))
    return Plan(examples, global_batch, total, round(total * t.warmup_ratio))


def step_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{STEP_PREFIX}*") if (p / checkpoint.MANIFEST).is_file())


RUN_FILES = ("latest", "summary.json", "config.yaml")


def check_output(out: Path, resume: bool, overwrite: bool = False) -> Path | None:
    """The checkpoint to resume from; refuses to mix a new run into an old run's folder.

    ``overwrite`` lets a new run replace an earlier one (:func:`clear_run` removes it once the new
    run's data and model are ready, so a run refused for bad input loses nothing). ``resume`` on a
    folder with no step checkpoint yet starts the run (there is nothing to lose); on a finished run
    it is refused.
    """
    steps = step_dirs(out) if out.is_dir() else []
    finished = (out / checkpoint.FINAL / checkpoint.MANIFEST).is_file()
    if overwrite:
        return None
    if finished and not steps:
        raise ModaverseError(f"{out}: holds a finished run (final/) with no step checkpoint to resume; choose "
                             "another --output-dir, or pass --overwrite to replace it")
    if not resume:
        if steps or finished:
            raise ModaverseError(f"{out}: already holds a training run; pass --resume to continue it, --overwrite "
                                 "to replace it, or choose another --output-dir")
        return None
    if not steps:
        log.info("%s: no checkpoint yet, so the run starts from the beginning", out)
        return None
    latest = out / checkpoint.LATEST
    if latest.is_file() and (out / latest.read_text().strip() / checkpoint.MANIFEST).is_file():
        return out / latest.read_text().strip()
    return steps[-1]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read_data(config: Config, caps):
    """Records, their media (checked to exist) and the messages to train on."""
    from modaverse.data.records import read_records
    from modaverse.training.examples import messages, resolve_media

    data = config.train.data
    if not data:
        raise ModaverseError("train.data is not set: give a training JSONL (--set train.data=FILE)")
    if not Path(data).is_file():
        raise ModaverseError(f"train.data {data}: no such file (relative paths are from the working directory; "
                             "`modaverse data synth --output DIR` writes the synthetic set)")
    records = read_records(data, caps)
    if not records:
        raise ModaverseError(f"{data}: no records")
    convs = []
    for line, rec in enumerate(records, 1):
        media = resolve_media(rec, data)
        for m in media:
            if not m.path.is_file():
                raise ModaverseError(f"{data}: record {rec.id or line}: {m.path}: no such file")
        convs.append((rec.id or str(line), media, messages(rec, [m.modality for m in media])))
    return convs


def _features(config: Config, convs, acc, bar_off: bool | None):
    """A feature table for every distinct media file, and each conversation's rows in it."""
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    from modaverse.features import FeatureCache, file_key

    cache = FeatureCache.for_config(config)
    keys: list[list[str]] = [[]]
    if acc.is_main_process:
        keyed = {}
        per_conv = []
        for _, media, _ in convs:
            ks = []
            for m in media:
                k = keyed.get(m.path) or file_key(m.path, m.modality)
                keyed[m.path] = k
                ks.append(k)
            per_conv.append(ks)
        todo = [(keyed[m.path], m.path, m.modality) for _, media, _ in convs for m in media]
        missing = cache.missing([k for k, _, _ in todo])
        if missing:
            from modaverse.encoder import Encoder

            encoder = Encoder.from_config(config.encoder, config.media)
            with tqdm(total=len(missing), unit="file", desc="encode", disable=bar_off, file=sys.stderr,
                      leave=False) as bar:
                cache.ensure(todo, encoder, on_progress=bar.update)
            del encoder
        log.info("features: %d distinct files, %d newly encoded, cache %s", len(keyed), len(missing), cache.folder)
        keys = [per_conv]
    broadcast_object_list(keys)
    per_conv = keys[0]
    unique = list(dict.fromkeys(k for ks in per_conv for k in ks))
    row = {k: i for i, k in enumerate(unique)}
    if not acc.is_main_process:  # its index predates the shards the main process wrote
        cache = FeatureCache.for_config(config)
    table = cache.get(unique) if unique else torch.empty(0, 1)
    return table, [[row[k] for k in ks] for ks in per_conv]


def _optimizer(model: torch.nn.Module, config: Config, total: int, warmup: int):
    from transformers import get_scheduler

    t = config.train
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ModaverseError("nothing to train: every part is frozen (see trainable: in the config)")
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[t.schedule]
    return opt, get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)


def clear_run(out: Path) -> None:
    """Removes an earlier run's checkpoints and files from ``out`` (``--overwrite``)."""
    steps = step_dirs(out) if out.is_dir() else []
    if not steps and not (out / checkpoint.FINAL).exists():
        return
    for d in [*steps, out / checkpoint.FINAL]:
        shutil.rmtree(d, ignore_errors=True)
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)
    log.info("%s: removed the earlier run (--overwrite)", out)


def bounded(convs: list, config: Config, seed: int, processes: int) -> list:
    """The conversations a short run uses: ``train.max_examples``, or what ``max_steps`` batches
    can reach, as a seeded sample in file order, so only their files are encoded."""
    t = config.train
    budget = t.max_examples
    if t.max_steps:
        reach = t.max_steps * t.batch_size * t.grad_accum * processes
        budget = min(budget or reach, reach)
    if not budget or budget >= len(convs):
        return convs
    keep = sorted(_permutation(len(convs), seed, -1)[:budget])
    log.info("using %d of %d conversations (train.max_examples / max_steps)", budget, len(convs))
    return [convs[i] for i in keep]


def train(config: Config, *, output_dir: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, overwrite: bool = False) -> dict:
    """Runs (or resumes) a training run; returns its summary (also written to ``summary.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
    from tqdm.auto import tqdm

    from modaverse import meta
    from modaverse.llm import wrap_bpe
    from modaverse.pipeline import build_trainable
    from modaverse.training.examples import build_examples, collate, training_builder
    from modaverse.training.model import AlignmentModel

    t = config.train
    out = Path(output_dir or t.output_dir)
    seed = t.seed if t.seed is not None else config.seed
    started = time.perf_counter()

    # -- 0. the launcher's processes, and where this run writes ----------------------------------
    acc = Accelerator(mixed_precision=t.mixed_precision, log_with=t.log_with or None, project_dir=str(out),
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = acc.is_main_process
    if main and acc.num_processes > 1 and acc.device.type == "cpu":
        log.warning("%d training processes on CPUs share this machine's %s cores (the accelerate config asks "
                    "for them; configs/accelerate/*.yaml are written for one process per GPU)",
                    acc.num_processes, os.cpu_count())
    bar_off = None if progress is None else not progress  # None: a bar on terminals, log lines elsewhere
    resume_from = check_output(out, resume, overwrite)
    if config.trainable.llm == "full" and config.llm.model is not None and not t.allow_full_finetune:
        raise ModaverseError(f"trainable.llm: full would fine-tune every weight of the pretrained {config.llm.model}; "
                             "use --config lora (LoRA + marker rows + adaptors), or set "
                             "train.allow_full_finetune=true to do it on purpose")
    caps = meta.capabilities(config.zoo)

    # -- 1. data, checked before any model is built ------------------------------------------------
    convs = bounded(_read_data(config, caps), config, seed, acc.num_processes)

    # -- 2. features: each distinct file encoded once, then read from the cache --------------------
    table, rows = _features(config, convs, acc, bar_off)

    # -- 3. the trainable model and the tokenised conversations -----------------------------------
    set_seed(seed)
    device_cfg = config.llm.model_copy(update={"device": str(acc.device)})
    run_config = config.model_copy(update={"llm": device_cfg})
    tokenizer = None
    if resume_from is not None and config.llm.model is None:
        saved = checkpoint.saved_tokenizer(resume_from)
        tokenizer = wrap_bpe(saved) if saved else None
    llm, adaptors = build_trainable(run_config, config.encoder.imagebind_config().out_embed_dim, tokenizer)
    if resume_from is None:
        used = table[[r for rs in rows for r in rs]]
        used_modalities = [m.modality for _, media, _ in convs for m in media]
        adaptors.fit(used, used_modalities)
        adaptors.match_scale(llm.text_embedding_norm(), used, used_modalities)
    model = AlignmentModel(adaptors, llm.model)
    builder = training_builder(config, llm.tokenizer, llm.max_context)
    conversations = [(i + 1, msgs, r, [m.modality for m in media])
                     for i, ((_, media, msgs), r) in enumerate(zip(convs, rows, strict=True))]
    examples, stats = build_examples(builder, conversations)
    if stats.dropped or stats.trimmed_turns:
        log.warning("%d conversation(s) longer than %d tokens dropped (lines %s), %d history turn(s) trimmed",
                    stats.dropped, builder.max_context, stats.dropped_lines[:5], stats.trimmed_turns)
    if not examples:
        raise ModaverseError(f"{t.data}: no conversation fits in {builder.max_context} tokens")
    p = plan(config, len(examples), acc.num_processes)
    if main:
        trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
        total = sum(q.numel() for q in model.parameters())
        log.info("%d examples (%d tokens, %d target), %d steps of %d conversations", len(examples), stats.tokens,
                 stats.target_tokens, p.total_steps, p.global_batch)
        log.info("training %s of %s parameters (%.2f%%): adaptor %s, llm %s, marker rows %s", f"{trainable:,}",
                 f"{total:,}", 100 * trainable / total, config.trainable.adaptor, config.trainable.llm,
                 "on" if config.trainable.markers and config.trainable.llm != "full" else "off")

    # -- 4. optimiser, schedule, accelerate ----------------------------------------------------------
    optimizer, scheduler = _optimizer(model, config, p.total_steps, p.warmup_steps)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # stepped once per optimiser step, whatever the process count
    # accelerate would save/load the whole model; only the trainable tensors go into our checkpoints.
    acc.register_save_state_pre_hook(lambda models, weights, _dir: weights.clear())
    acc.register_load_state_pre_hook(lambda models, _dir: models.clear())

    def trainable_now() -> dict[str, torch.Tensor]:
        names = checkpoint.trainable_tensors(adaptors, llm.model).keys()
        state = acc.get_state_dict(model)  # unwraps DDP; gathers FSDP / DeepSpeed shards
        return {k: state[k] for k in names}

    def save_step(step: int) -> None:
        name = f"{STEP_PREFIX}{step:06d}"
        tmp = out / f".{name}.partial"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        tensors = trainable_now()
        if main:
            checkpoint.write(tmp, tensors, config, step=step, tokenizer_json=llm.tokenizer_json,
                             extra={"total_steps": p.total_steps})
            shutil.rmtree(out / name, ignore_errors=True)
            tmp.rename(out / name)
            write_text_atomic(out / checkpoint.LATEST, name + "\n")
            for old in step_dirs(out)[: -t.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    start = 0
    if resume_from is not None:
        manifest = checkpoint.read_manifest(resume_from)
        if manifest.get("total_steps") != p.total_steps:
            raise ModaverseError(f"{resume_from}: planned {manifest.get('total_steps')} steps but this config "
                                 f"plans {p.total_steps}; resume with the run's settings")
        acc.load_state(str(resume_from))
        checkpoint.load(resume_from, adaptors, llm.model, config)
        start = manifest["step"]
        if main:
            log.info("resumed from %s at step %d", resume_from, start)
    if main:
        if overwrite:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", _yaml(config))
        for stale in out.glob(f".{STEP_PREFIX}*.partial"):  # left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
    if t.log_with:
        acc.init_trackers(out.name, config={"lr": t.lr, "batch": p.global_batch, "steps": p.total_steps})

    # -- 5. the loop ---------------------------------------------------------------------------------
    rank, world, per_rank = acc.process_index, acc.num_processes, t.batch_size * t.grad_accum
    pad = llm.tokenizer.pad_token_id
    params = [q for q in model.parameters() if q.requires_grad]
    bar = tqdm(total=p.total_steps, initial=start, unit="step", desc="train", disable=bar_off, file=sys.stderr,
               dynamic_ncols=True) if main else None
    losses, tokens, window_start = [], 0, time.perf_counter()
    last: dict = {}
    model.train()
    for step in range(start, p.total_steps):
        order = stream(len(examples), seed, step * p.global_batch, p.global_batch)
        mine = order[rank * per_rank : (rank + 1) * per_rank]
        for a in range(t.grad_accum):
            batch = collate([examples[i] for i in mine[a * t.batch_size : (a + 1) * t.batch_size]], pad)
            sync = contextlib.nullcontext() if a == t.grad_accum - 1 else acc.no_sync(model)
            with sync:
                loss = model(batch, table) / t.grad_accum
                acc.backward(loss)
            losses.append(loss.detach() * t.grad_accum)
            tokens += int(batch.attention_mask.sum())
        if t.max_grad_norm is not None:
            acc.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if done % t.log_every == 0 or done == p.total_steps:
            mean = acc.reduce(torch.stack(losses).mean().to(acc.device), reduction="mean").item()
            seconds = time.perf_counter() - window_start
            last = {"loss": round(mean, 4), "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": round(tokens * world / max(seconds, 1e-9))}
            losses, tokens, window_start = [], 0, time.perf_counter()
            if t.log_with:
                acc.log(last, step=done)
            if bar is not None and not bar.disable:
                bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}", tok_s=last["tokens_per_s"])
            elif main:
                log.info("step %d/%d loss %.4f lr %.2e %d tok/s", done, p.total_steps, last["loss"], last["lr"],
                         last["tokens_per_s"])
        if bar is not None:
            bar.update(1)
        if t.save_every and done % t.save_every == 0 and done < p.total_steps:
            save_step(done)
    if bar is not None:
        bar.close()

    # -- 6. final checkpoint, agreement between processes, evaluation --------------------------------
    tensors = trainable_now()
    digests = gather_object([_digest(checkpoint.trainable_tensors(adaptors, llm.model))])
    if len(set(digests)) > 1:
        raise ModaverseError(f"processes ended with different weights ({digests}); this is a bug, please report it")
    summary: dict = {}
    if main:
        final = checkpoint.save(out / checkpoint.FINAL, tensors, config, step=p.total_steps,
                                tokenizer_json=llm.tokenizer_json, extra={"total_steps": p.total_steps})
        summary = {
            "output": str(final), "steps": p.total_steps, "resumed_from_step": start, "processes": world,
            "global_batch": p.global_batch, "examples": len(examples), "data": stats.as_dict(),
            "last": last, "seconds": round(time.perf_counter() - started, 2), "weights_sha256": digests,
        }
        if t.eval_data:
            from modaverse.evaluate import evaluate_invocations

            summary["eval"] = evaluate_invocations(config.model_copy(update={"checkpoint": str(final)}),
                                                   t.eval_data, progress=progress, limit=t.eval_limit)
            summary["eval"].pop("all_mistakes")
            if t.eval_limit and summary["eval"]["items"] >= t.eval_limit:
                log.info("scored the first %d records of %s (train.eval_limit); all of them: modaverse eval "
                         "invocations --data %s --checkpoint %s", t.eval_limit, t.eval_data, t.eval_data, out)
        write_json_atomic(out / "summary.json", summary)
    acc.wait_for_everyone()
    if t.log_with:
        acc.end_training()
    return summary


def _yaml(config: Config) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
