"""``modaverse train``: one-stage I/O alignment of adaptors + LoRA, on accelerate, as a recipe class.

:class:`TrainingRecipe` reads top to bottom, like a torchtune recipe:

1. :meth:`~TrainingRecipe.setup`: check the output folder and the records (every media file
   exists) before any model is built; encode every distinct media file once into the feature
   cache (main process only); build the trainable parts as ``trainable:`` says and tokenise
   every conversation once; optimiser and schedule; :meth:`~TrainingRecipe.resume` when asked;
2. :meth:`~TrainingRecipe.train`: AdamW, warm-up then linear/cosine decay, gradient
   accumulation and clipping, over a data order that is a pure function of (seed, step);
   :meth:`~TrainingRecipe.save` every ``save_every`` steps, atomically;
3. :meth:`~TrainingRecipe.finish`: check that all processes hold the same weights, write the
   final checkpoint, and score ``eval_data`` through the ``evaluate`` hook the caller passes
   (training does not import evaluation; the CLI joins them);
4. :meth:`~TrainingRecipe.cleanup`: close trackers.

The launcher decides the parallelism: ``accelerate launch --config_file
configs/accelerate/ddp.yaml -m modaverse train ...`` (or fsdp.yaml, zero2.yaml); plain
``modaverse train`` runs one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from modaverse import checkpoint
from modaverse.config import Config
from modaverse.core.atomic import write_json_atomic
from modaverse.core.errors import ModaverseError
from modaverse.encoder.imagebind.config import ImageBindConfig
from modaverse.training import sharding
from modaverse.training.run import (
    STEP_PREFIX,
    Recipe,
    bounded,
    check_output,
    plan,
    prepare_folder,
    publish_step,
    step_folder,
    stream,
)

log = logging.getLogger("modaverse")

#: Media uses the adaptors' standardisation and scale are fitted on: all of them up to this many
#: (every synthetic set), else this many evenly spaced, so fitting never loads the whole table.
FIT_SAMPLE = 16_384

#: Scores a finished run: (the config with the final checkpoint, the held-out JSONL, progress, record limit)
#: -> a summary dict. ``modaverse train`` passes invocation accuracy (modaverse.evaluation.invocations).
EvalHook = Callable[[Config, str, "bool | None", "int | None"], dict]


class TrainingRecipe(Recipe):
    """One training run. ``run()`` = setup, train, finish, cleanup; each step is a method."""

    def __init__(self, config: Config, *, output_dir: str | Path | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None, evaluate: EvalHook | None = None):
        self.config, self.t = config, config.train
        self.out = Path(output_dir or self.t.output_dir)
        self.seed = self.t.seed if self.t.seed is not None else config.seed
        self.want_resume, self.overwrite, self.progress, self.evaluate = resume, overwrite, progress, evaluate
        self.bar_off = None if progress is None else not progress  # None: a bar on terminals, log lines elsewhere
        self.started = time.perf_counter()
        self.start_step = 0

    # -- 1. setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from modaverse.meta import schema as meta

        config, t = self.config, self.t
        self.acc = acc = Accelerator(mixed_precision=t.mixed_precision, log_with=t.log_with or None,
                                     project_dir=str(self.out),
                                     kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.main = acc.is_main_process
        self.sharded = sharding.check_launch(acc)
        if self.main and acc.num_processes > 1 and acc.device.type == "cpu":
            log.warning("%d training processes on CPUs share this machine's %s cores (the accelerate config asks "
                        "for them; configs/accelerate/*.yaml are written for one process per GPU)",
                        acc.num_processes, os.cpu_count())
        self.resume_from = check_output(self.out, self.want_resume, self.overwrite)
        if config.trainable.llm == "full" and config.llm.model is not None and not t.allow_full_finetune:
            raise ModaverseError(f"trainable.llm: full would fine-tune every weight of the pretrained "
                                 f"{config.llm.model}; use --config lora (LoRA + marker rows + adaptors), or set "
                                 "train.allow_full_finetune=true to do it on purpose")
        # data, checked before any model is built; then each distinct file encoded once
        convs = bounded(_read_data(config, meta.capabilities(config.zoo)), config, self.seed, acc.num_processes)
        self.table, rows = _features(config, convs, acc, self.bar_off)
        set_seed(self.seed)
        self._build_model(convs, rows)
        self.plan = plan(config, len(self.examples), acc.num_processes)
        self._log_plan()
        if self.resume_from is not None:  # weights into the whole model, before any wrapping or sharding
            self._resume_weights(self.resume_from)
        if self.sharded:  # FSDP2 by our own hand on any device (see modaverse.training.sharding)
            self.model = sharding.shard(self.model, acc.mixed_precision)
        self.optimizer, self.scheduler = _optimizer(self.model, config, self.plan.total_steps, self.plan.warmup_steps)
        if acc.state.deepspeed_plugin is not None:  # DeepSpeed sizes its engine from these (we pass no dataloader)
            acc.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=t.batch_size, gradient_accumulation_steps=t.grad_accum,
                train_batch_size=self.plan.global_batch)
        if not self.sharded:
            self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        acc.register_for_checkpointing(self.scheduler)  # stepped once per optimiser step, whatever the process count
        # accelerate would save/load the whole model; only the trainable tensors go into our checkpoints.
        acc.register_save_state_pre_hook(lambda models, weights, _dir: weights.clear())
        acc.register_load_state_pre_hook(lambda models, _dir: models.clear())
        if self.resume_from is not None:
            self.resume(self.resume_from)
        if self.main:
            prepare_folder(self.out, config, self.overwrite)
        if t.log_with:
            acc.init_trackers(self.out.name, config={"lr": t.lr, "batch": self.plan.global_batch,
                                                     "steps": self.plan.total_steps})

    def _build_model(self, convs: list, rows: list[list[int]]) -> None:
        """The trainable parts (standardised and scaled on this run's features) and the tokenised conversations."""
        from modaverse.data.conversation import training_builder
        from modaverse.pipeline.assistant import build_trainable, tokenizer_for
        from modaverse.training.examples import build_examples
        from modaverse.training.model import AlignmentModel

        config = self.config
        run_config = config.model_copy(update={"llm": config.llm.model_copy(update={"device": str(self.acc.device)})})
        dim = ImageBindConfig.from_encoder(config.encoder).out_embed_dim
        self.llm, self.adaptors = build_trainable(run_config, dim, tokenizer_for(config, self.resume_from))
        if self.resume_from is None:  # statistics over the files' uses, at most FIT_SAMPLE of them, evenly spaced
            uses = [(r, m.modality) for (_, media, _), rs in zip(convs, rows, strict=True)
                    for r, m in zip(rs, media, strict=True)]
            uses = [uses[i] for i in sorted({len(uses) * j // FIT_SAMPLE for j in range(FIT_SAMPLE)})] \
                if len(uses) > FIT_SAMPLE else uses
            used, used_modalities = self.table[[r for r, _ in uses]], [m for _, m in uses]
            self.adaptors.fit(used, used_modalities)
            self.adaptors.match_scale(self.llm.text_embedding_norm(), used, used_modalities)
        self.model = AlignmentModel(self.adaptors, self.llm.model)
        builder = training_builder(config, self.llm.tokenizer, self.llm.max_context)
        conversations = [(i + 1, msgs, r, [m.modality for m in media])
                         for i, ((_, media, msgs), r) in enumerate(zip(convs, rows, strict=True))]
        self.examples, self.stats = build_examples(builder, conversations)
        if self.stats.dropped or self.stats.trimmed_turns:
            log.warning("%d conversation(s) longer than %d tokens dropped (lines %s), %d history turn(s) trimmed",
                        self.stats.dropped, builder.max_context, self.stats.dropped_lines[:5],
                        self.stats.trimmed_turns)
        if not self.examples:
            raise ModaverseError(f"{self.t.data}: no conversation fits in {builder.max_context} tokens")

    def _log_plan(self) -> None:
        if not self.main:
            return
        p, stats, config = self.plan, self.stats, self.config
        trainable = sum(q.numel() for q in self.model.parameters() if q.requires_grad)
        total = sum(q.numel() for q in self.model.parameters())
        acc = self.acc
        if acc.num_processes > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))  # set by torchrun, which accelerate runs
            log.info("%s over %d processes on %d machine(s), %s backend",
                     "FSDP2 (fully_shard)" if self.sharded else acc.distributed_type.value, acc.num_processes,
                     acc.num_processes // local, dist.get_backend())
        log.info("%d examples (%d tokens, %d target), %d steps of %d conversations", len(self.examples),
                 stats.tokens, stats.target_tokens, p.total_steps, p.global_batch)
        log.info("training %s of %s parameters (%.2f%%): adaptor %s, llm %s, marker rows %s", f"{trainable:,}",
                 f"{total:,}", 100 * trainable / total, config.trainable.adaptor, config.trainable.llm,
                 "on" if config.trainable.markers and config.trainable.llm != "full" else "off")

    def _resume_weights(self, folder: Path) -> None:
        """The trainable weights of a step checkpoint of the same plan."""
        manifest = checkpoint.read_manifest(folder)
        if manifest.get("total_steps") != self.plan.total_steps:
            raise ModaverseError(f"{folder}: planned {manifest.get('total_steps')} steps but this config "
                                 f"plans {self.plan.total_steps}; resume with the run's settings")
        checkpoint.load(folder, self.adaptors, self.llm.model, self.config)
        self.start_step = manifest["step"]

    def resume(self, folder: Path) -> None:
        """Optimiser, schedule and random states from the step checkpoint whose weights were loaded."""
        if self.sharded:
            sharding.load_optimizer(self.model, self.optimizer, folder)
        self.acc.load_state(str(folder))
        if self.main:
            log.info("resumed from %s at step %d", folder, self.start_step)

    # -- 2. train -----------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm.auto import tqdm

        acc, t, p, model = self.acc, self.t, self.plan, self.model
        rank, world, per_rank = acc.process_index, acc.num_processes, t.batch_size * t.grad_accum
        params = [q for q in model.parameters() if q.requires_grad]
        bar = tqdm(total=p.total_steps, initial=self.start_step, unit="step", desc="train", disable=self.bar_off,
                   file=sys.stderr, dynamic_ncols=True) if self.main else None
        losses, tokens, window_start = [], 0, time.perf_counter()
        self.last: dict = {}
        model.train()
        for step in range(self.start_step, p.total_steps):
            order = stream(len(self.examples), self.seed, step * p.global_batch, p.global_batch)
            mine = order[rank * per_rank : (rank + 1) * per_rank]
            batches = [self._batch(mine[a * t.batch_size : (a + 1) * t.batch_size]) for a in range(t.grad_accum)]
            used = {m for b in batches for mods in b.modalities for m in mods}
            # each token of the global batch weighs the same, however the batch is split over processes
            # and micro-batches (data-parallel gradients are averaged over processes, hence the world factor)
            counts = [_targets(b) for b in batches]
            share = world / max(1.0, acc.reduce(torch.tensor(float(sum(counts)), device=acc.device), "sum").item())
            # DeepSpeed's engine divides each micro-batch's loss by its accumulation steps again (untested on GPU)
            undo = t.grad_accum if acc.distributed_type.value == "DEEPSPEED" else 1
            step_loss = torch.zeros(())
            for a, (batch, n) in enumerate(zip(batches, counts, strict=True)):
                sync = contextlib.nullcontext() if a == t.grad_accum - 1 else acc.no_sync(model)
                with sync:
                    loss = model(batch, self.table, every_parameter=self.sharded) * (n * share)
                    acc.backward(loss * undo)
                step_loss += loss.detach().cpu()
                tokens += int(batch.attention_mask.sum())
            losses.append(step_loss)
            if self.sharded:
                sharding.drop_unused_gradients(self.adaptors, used)
            if t.max_grad_norm is not None:  # sharded: torch's own, over DTensors (the global norm)
                (torch.nn.utils.clip_grad_norm_ if self.sharded else acc.clip_grad_norm_)(params, t.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

            done = step + 1
            if done % t.log_every == 0 or done == p.total_steps:
                seconds = time.perf_counter() - window_start
                self._log_window(done, losses, tokens * world / max(seconds, 1e-9), bar)
                losses, tokens, window_start = [], 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if t.save_every and done % t.save_every == 0 and done < p.total_steps:
                self.save(done)
        if bar is not None:
            bar.close()

    def _batch(self, indices: list[int]):
        from modaverse.training.examples import collate

        return collate([self.examples[i] for i in indices], self.llm.tokenizer.pad_token_id)

    def _log_window(self, done: int, losses: list, tokens_per_s: float, bar) -> None:
        mean = self.acc.reduce(torch.stack(losses).mean().to(self.acc.device), reduction="mean").item()
        self.last = {"loss": round(mean, 4), "lr": self.scheduler.get_last_lr()[0],
                     "tokens_per_s": round(tokens_per_s)}
        if self.t.log_with:
            self.acc.log(self.last, step=done)
        if bar is not None and not bar.disable:
            bar.set_postfix(loss=f"{self.last['loss']:.4f}", lr=f"{self.last['lr']:.2e}",
                            tok_s=self.last["tokens_per_s"])
        elif self.main:
            log.info("step %d/%d loss %.4f lr %.2e %d tok/s", done, self.plan.total_steps, self.last["loss"],
                     self.last["lr"], self.last["tokens_per_s"])

    # -- checkpoints ----------------------------------------------------------------------------------
    def _trainable_now(self) -> dict[str, torch.Tensor]:
        names = checkpoint.trainable_tensors(self.adaptors, self.llm.model).keys()
        if self.sharded:
            return sharding.full_state(self.model, names)
        state = self.acc.get_state_dict(self.model)  # unwraps DDP; gathers DeepSpeed shards
        return {k: state[k] for k in names}

    def save(self, step: int) -> None:
        """A resumable step checkpoint (optimiser state included), written beside and renamed into place."""
        acc, out = self.acc, self.out
        tmp, name = step_folder(out, step) if self.main else (out / f".{STEP_PREFIX}{step:06d}.partial", "")
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if self.sharded:
            sharding.save_optimizer(self.model, self.optimizer, tmp, self.main)
        tensors = self._trainable_now()
        if self.main:
            checkpoint.write(tmp, tensors, self.config, step=step, tokenizer_json=self.llm.tokenizer_json,
                             extra={"total_steps": self.plan.total_steps})
            publish_step(out, tmp, name, self.t.keep_last)
        acc.wait_for_everyone()

    # -- 3. finish ------------------------------------------------------------------------------------
    def finish(self) -> dict:
        from accelerate.utils import gather_object

        t, p = self.t, self.plan
        tensors = self._trainable_now()
        digests = gather_object([_digest(tensors)])
        if len(set(digests)) > 1:
            raise ModaverseError(f"processes ended with different weights ({digests}); this is a bug, please report it")
        summary: dict = {}
        if self.main:
            final = checkpoint.save(self.out / checkpoint.FINAL, tensors, self.config, step=p.total_steps,
                                    tokenizer_json=self.llm.tokenizer_json, extra={"total_steps": p.total_steps})
            summary = {
                "output": str(final), "steps": p.total_steps, "resumed_from_step": self.start_step,
                "processes": self.acc.num_processes, "global_batch": p.global_batch, "examples": len(self.examples),
                "data": self.stats.as_dict(), "last": self.last,
                "seconds": round(time.perf_counter() - self.started, 2), "weights_sha256": digests,
            }
            if t.eval_data and self.evaluate is not None:
                summary["eval"] = self.evaluate(self.config.model_copy(update={"checkpoint": str(final)}),
                                                t.eval_data, self.progress, t.eval_limit)
                if t.eval_limit and summary["eval"]["items"] >= t.eval_limit:
                    log.info("scored the first %d records of %s (train.eval_limit); all of them: modaverse eval "
                             "invocations --data %s --checkpoint %s", t.eval_limit, t.eval_data, t.eval_data,
                             self.out)
            write_json_atomic(self.out / "summary.json", summary)
        self.acc.wait_for_everyone()
        return summary

    # -- 4. cleanup -----------------------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.t.log_with and hasattr(self, "acc"):
            self.acc.end_training()
        super().cleanup()


def train(config: Config, *, output_dir: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, overwrite: bool = False, evaluate: EvalHook | None = None) -> dict:
    """Runs (or resumes) a training run; returns its summary (also written to ``summary.json``)."""
    return TrainingRecipe(config, output_dir=output_dir, resume=resume, overwrite=overwrite, progress=progress,
                          evaluate=evaluate).run()


def _targets(batch) -> int:
    """The tokens a causal LM's loss averages over: labels after the first position that are not ignored."""
    from modaverse.data.conversation import IGNORE

    return int((batch.labels[:, 1:] != IGNORE).sum())


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read_data(config: Config, caps):
    """Records, their media (checked to exist) and the messages to train on."""
    from modaverse.data.conversation import messages, resolve_media
    from modaverse.data.records import read_records

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
    """A lazy feature table over every distinct media file, and each conversation's rows in it.

    Every process hashes and encodes its share of the files into the shared cache (each shard is
    written atomically under its own name), then all wait for each other; no process ever holds
    the whole table (:class:`~modaverse.encoder.features.LazyTable` reads a batch's rows).
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from modaverse.encoder.features import FeatureCache, LazyTable, file_key

    rank, world = acc.process_index, acc.num_processes
    files = list(dict.fromkeys((m.path, m.modality) for _, media, _ in convs for m in media))
    mine = [(i, file_key(p, m)) for i, (p, m) in enumerate(files) if i % world == rank]
    key_of = dict(gather_object(mine) if world > 1 else mine)
    keys = [key_of[i] for i in range(len(files))]
    cache = FeatureCache.for_config(config)
    missing = cache.missing(keys)  # the same list on every process: the shards present before any wrote
    where = dict(zip(keys, files, strict=True))
    todo = [(k, *where[k]) for k in missing[rank::world]]
    started = time.perf_counter()
    if todo:
        from modaverse.encoder.embed import Encoder

        encoder = Encoder.from_config(config.encoder, config.media)
        desc = "encode" if world == 1 else f"encode (process {rank + 1} of {world})"
        with tqdm(total=len(todo), unit="file", desc=desc, disable=bar_off if acc.is_main_process else True,
                  file=sys.stderr, leave=False) as bar:
            cache.ensure(todo, encoder, on_progress=bar.update)
        del encoder
    acc.wait_for_everyone()
    if acc.is_main_process:
        done = (f"{len(missing)} newly encoded by {world} process(es) in {time.perf_counter() - started:.1f} s"
                if missing else "all cached")
        log.info("features: %d distinct files, %s, cache %s", len(files), done, cache.folder)
    index = {f: k for k, f in zip(keys, files, strict=True)}
    per_conv = [[index[(m.path, m.modality)] for m in media] for _, media, _ in convs]
    unique = list(dict.fromkeys(k for ks in per_conv for k in ks))
    row = {k: i for i, k in enumerate(unique)}
    table = LazyTable(FeatureCache.for_config(config), unique)  # a fresh index: every process's shards
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
