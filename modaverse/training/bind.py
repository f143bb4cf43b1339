"""``modaverse bind``: ImageBind's own recipe, so the encoder perceives what the assistant is asked about.

ImageBind's features come from a recipe, not from its architecture: vision and text towers trained
CLIP-style on captioned images and videos, then every other modality *bound* to the frozen
embeddings of images or videos it was recorded with, never to text. Text then reaches audio, depth,
thermal and IMU through vision alone (emergent zero-shot). :class:`BindRecipe` reads top to bottom:

1. :meth:`~BindRecipe.setup`: check the output folder, the towers and the pairs file before any
   model is built; load every file once; build the encoder with the asked towers unfrozen;
2. :meth:`~BindRecipe.train`: the vision-text stage (symmetric InfoNCE with in-batch negatives;
   identical captions are positives, not negatives; a caption of two objects adds its
   attribute-swapped caption as a hard negative, NegCLIP's remedy for bag-of-words features; the
   text tower's learnable temperature), then
   the binding stage (each tower against its anchors' frozen embeddings, computed once, at the
   tower's own fixed temperature, upstream's); label-keeping augmentations of the trained side;
   a step checkpoint every ``save_every`` steps, atomically; ``--resume`` continues exactly
   (the data order and augmentations are pure functions of the seed and the step);
3. :meth:`~BindRecipe.finish`: one ``<tower>.safetensors`` per trained tower in ``final/``
   (:mod:`modaverse.encoder.imagebind.towers`), the text tower's carrying its tokenizer;
4. ``cleanup`` (:class:`~modaverse.training.run.Recipe`'s).

Over pretrained weights (``encoder.weights``, e.g. the official ``imagebind_huge.pth``) the
vision-text stage is refused: those towers stay frozen, as upstream's, and only new towers bind.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modaverse.checkpoint import MANIFEST
from modaverse.config import Config
from modaverse.core.atomic import write_json_atomic
from modaverse.core.errors import ModaverseError
from modaverse.core.modality import TOWER
from modaverse.training.run import check_output, prepare_folder, publish_step, step_folder, stream
from modaverse.training.stages import StagedRecipe

log = logging.getLogger("modaverse")

CLIP_TOWERS = ("vision", "text")
BOUND_TOWERS = ("audio", "depth", "thermal", "imu")
STATE = "state.pt"


#: Two noun phrases of an article, an attribute and a noun, joined by "and"; the rest is kept.
TWO_OBJECTS = re.compile(r"^(an?) (\w+) (\w+) and (an?) (\w+) (\w+)(.*)$")


def soft_targets(groups: list, columns: list | None = None) -> torch.Tensor:
    """Row-normalised positives: pairs of the same group (an identical caption) are not negatives.
    ``columns`` (default ``groups``) may add groups past the rows': hard negatives, never positive."""
    columns = groups if columns is None else columns
    index = {g: i for i, g in enumerate(dict.fromkeys([*groups, *columns]))}
    rows, cols = torch.tensor([index[g] for g in groups]), torch.tensor([index[g] for g in columns])
    same = (rows[:, None] == cols[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def info_nce(a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on logits ``a @ b.T`` (the temperature is already in the embeddings' scale).
    Rows of ``b`` past ``a``'s are extra negatives for ``a``'s side only (they have no partner)."""
    logits, n = a @ b.T, len(a)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :n].T, targets[:, :n].T)) / 2


def swapped_caption(caption: str) -> str | None:
    """NegCLIP's attribute swap: "a red ring and a blue circle" -> "a red circle and a blue ring"; None
    when the caption is not two such phrases or the swap changes nothing. Bag-of-words features score
    both alike, so as a negative it teaches which attribute belongs to which object."""
    m = TWO_OBJECTS.match(caption)
    if m is None or m[3] == m[6]:
        return None
    return f"{m[1]} {m[2]} {m[6]} and {m[4]} {m[5]} {m[3]}{m[7]}"


class BindRecipe(StagedRecipe):
    """One bind run. ``run()`` = setup, train, finish, cleanup."""

    desc = "bind"

    def __init__(self, config: Config, *, output_dir: str | Path | None = None, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None):
        self.config, self.b = config, config.bind
        self.log_every, self.save_every = self.b.log_every, self.b.save_every
        self.out = Path(output_dir or self.b.output_dir)
        self.seed = self.b.seed if self.b.seed is not None else config.seed
        self.want_resume, self.overwrite = resume, overwrite
        self.bar_off = None if progress is None else not progress
        self.started = time.perf_counter()
        self.start_step = 0

    # -- 1. setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        from accelerate import Accelerator

        from modaverse.data.pairs import load_tensors, read_pairs

        config, b = self.config, self.b
        self.resume_from = check_output(self.out, self.want_resume, self.overwrite)
        towers = list(dict.fromkeys(b.towers))
        self.clip = [t for t in CLIP_TOWERS if t in towers]
        self.bound = [t for t in BOUND_TOWERS if t in towers]
        if self.clip and config.encoder.weights:
            raise ModaverseError(f"bind.towers asks for {' and '.join(self.clip)}, but encoder.weights "
                                 f"({config.encoder.weights}) are pretrained: their vision and text towers stay frozen, "
                                 "as upstream's; bind only new towers (--towers audio,thermal,...)")
        if self.clip and len(self.clip) == 1:
            raise ModaverseError("the vision-text stage trains both towers together: ask for vision and text, "
                                 f"not {self.clip[0]} alone")
        if not b.pairs:
            raise ModaverseError("bind.pairs is not set: give a pairs file (--pairs FILE; `modaverse data synth "
                                 "--output DIR` writes DIR/media.jsonl)")
        if not Path(b.pairs).is_file():
            raise ModaverseError(f"bind.pairs {b.pairs}: no such file (`modaverse data synth --output DIR` writes "
                                 "DIR/media.jsonl)")
        entries = read_pairs(b.pairs)
        self.captioned = [e for e in entries if e.caption is not None]
        self.views = {t: [e for e in entries if e.pair is not None and TOWER[e.modality] == t] for t in self.bound}
        if self.clip and not self.captioned:
            raise ModaverseError(f"{b.pairs}: no captioned image or video line to train vision and text on")
        for t, es in self.views.items():
            if len(es) < b.batch_size:
                raise ModaverseError(f"{b.pairs}: {len(es)} {t} line(s) with a `pair`, fewer than one batch "
                                     f"(bind.batch_size {b.batch_size})")
        anchors = {e.pair for es in self.views.values() for e in es}
        by_path = {e.path: e for e in entries}
        self.anchors = [by_path[p] for p in sorted(anchors)]
        # views of anchors with the same caption are positives for each other (else: of the same anchor)
        self.group = {e.path: e.caption or str(e.path) for e in self.anchors}
        acc = Accelerator(cpu=config.encoder.device == "cpu")
        if acc.num_processes > 1:  # each process would train alone on the same batches, gradients never shared
            raise ModaverseError(f"bind runs in one process ({acc.num_processes} were launched); run it as plain "
                                 "`modaverse bind`, on one GPU or CPU")
        self.main = acc.is_main_process
        self._build_encoder()
        wanted = {id(e): e for e in [*self.captioned, *self.anchors, *(e for es in self.views.values() for e in es)]}
        tensors = load_tensors(list(wanted.values()), config.media, None if self.bar_off is None else not self.bar_off)
        self.x = dict(zip(wanted, tensors, strict=True))
        self.stages = ([("vision-text", b.vision_text_steps)] if self.clip else []) + (
            [("bind", b.bind_steps)] if self.bound else [])
        if not self.stages:
            raise ModaverseError("bind.towers names no tower to train")
        self.total = sum(n for _, n in self.stages)
        if self.resume_from is not None:
            self.resume(self.resume_from)
        if self.main:
            prepare_folder(self.out, config, self.overwrite)
            data = ([f"{len(self.captioned)} captioned ({len(self.negatives)} caption(s) with a swapped hard "
                     "negative)"] if self.clip else []) + [
                f"{len(v)} {t}" for t, v in self.views.items()]
            log.info("bind: %s; %s", ", ".join(f"{s} {n} steps" for s, n in self.stages), ", ".join(data))

    def _build_encoder(self) -> None:
        from modaverse.encoder.embed import Encoder
        from modaverse.encoder.text import TextTokenizer, word_level_json

        config = self.config
        if config.encoder.dtype != "float32":  # trained weights and AdamW's state stay float32
            log.info("bind: the encoder trains in float32 (encoder.dtype %s is for inference)", config.encoder.dtype)
        enc = config.encoder.model_copy(update={"dtype": "float32"})
        self.encoder = Encoder.from_config(enc, config.media, text="text" in self.clip)
        self.device = self.encoder.device
        model = self.encoder.model
        c = model.config
        self.tokenizer = None
        if self.clip:  # a text tower trained from scratch gets a word-level vocabulary of the captions
            if self.encoder.tokenizer is not None:
                self.tokenizer = self.encoder.tokenizer
            else:
                source = f"a word-level tokenizer of {config.bind.pairs}'s captions"
                self.tokenizer = TextTokenizer(word_level_json([e.caption for e in self.captioned], c.text_vocab_size),
                                               c.text_context_length, c.text_vocab_size, source)
            self.tokens = self.tokenizer([e.caption for e in self.captioned])
            swaps = {c: swapped_caption(c) for c in dict.fromkeys(e.caption for e in self.captioned)}
            self.negatives = {c: n for c, n in swaps.items() if n is not None} if config.bind.hard_negatives else {}
            negs = list(dict.fromkeys(self.negatives.values()))
            self.negative_tokens = dict(zip(negs, self.tokenizer(negs), strict=True)) if negs else {}
        model.unfreeze([*self.clip, *self.bound])
        self.model = model

    def _optimizer(self, stage: str):
        from transformers import get_scheduler

        b = self.b
        towers = self.clip if stage == "vision-text" else self.bound
        from modaverse.encoder.imagebind.model import tower_prefixes

        prefixes = tower_prefixes(towers)
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and n.startswith(prefixes)]
        decay = [p for n, p in params if p.dim() >= 2]
        rest = [p for n, p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": b.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=b.lr)
        steps = dict(self.stages)[stage]
        sched = get_scheduler("cosine", opt, num_warmup_steps=round(steps * b.warmup_ratio), num_training_steps=steps)
        return opt, sched

    def resume(self, folder: Path) -> None:
        import json

        manifest = json.loads((folder / MANIFEST).read_text())  # a bind manifest, not a train checkpoint's
        if manifest.get("stages") != [list(s) for s in self.stages]:
            raise ModaverseError(f"{folder}: planned {manifest.get('stages')} but this config plans "
                                 f"{[list(s) for s in self.stages]}; resume with the run's settings")
        from modaverse.core.errors import key_mismatch
        from modaverse.encoder.imagebind.model import tower_prefixes

        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
        expected = {k: v for k, v in self.model.state_dict().items() if k.startswith(tower_prefixes(manifest["towers"]))}
        parts = key_mismatch(expected, state["model"])
        if parts:
            raise ModaverseError(f"{folder}: does not fit this encoder; " + "; ".join(parts))
        self.model.load_state_dict(state["model"], strict=False)
        self.start_step = manifest["step"]
        self._resumed = state
        log.info("resumed from %s at step %d", folder, self.start_step)

    # -- 2. train (the loop: training/stages.py) ----------------------------------------------------
    def _begin_stage(self, stage: str):
        if stage == "bind":
            self.frozen = self._anchor_embeddings()
        self.model.train()
        return self._optimizer(stage)

    def _step(self, stage: str, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):  # DropPath and dropout draw from the global generator
            torch.manual_seed(self.seed * 1_000_003 + step)
            return self._clip_step(step, g) if stage == "vision-text" else self._bind_step(step, g)

    def _parameters(self, stage: str) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _end_stage(self, stage: str) -> None:
        self.model.eval()

    def _batch(self, entries: list, step: int, salt: int) -> list:
        order = stream(len(entries), self.seed + salt, step * self.b.batch_size, self.b.batch_size)
        return [entries[i] for i in order]

    def _inputs(self, entries: list, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Tower inputs by modality group: a video contributes one random clip (training) of its views."""
        from modaverse.training.augment import augment

        out = {}
        for modality in dict.fromkeys(e.modality for e in entries):
            xs = []
            for e in entries:
                if e.modality != modality:
                    continue
                x = self.x[id(e)]
                if modality == "video":  # [views, 3, T, H, W]: one view per step
                    x = x[int(torch.randint(x.shape[0], (1,), generator=g))]
                xs.append(x.float())
            x = torch.stack(xs)
            if self.b.augment:
                x = augment(TOWER[modality], x, g, still=modality != "video")
            x = x.unsqueeze(1) if modality == "video" else x  # a video's one view keeps its view axis
            out[modality] = x.to(self.device)
        return out

    def _embed(self, entries: list, g: torch.Generator) -> torch.Tensor:
        """Embeddings in the entries' order (images and videos share the vision tower)."""
        inputs = self._inputs(entries, g)
        emb = {m: self.model.forward_tower(TOWER[m], x) for m, x in inputs.items()}
        rows, seen = [], {m: 0 for m in emb}
        for e in entries:
            rows.append(emb[e.modality][seen[e.modality]])
            seen[e.modality] += 1
        return torch.stack(rows)

    def _clip_step(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        order = stream(len(self.captioned), self.seed, step * self.b.batch_size, self.b.batch_size)
        entries = [self.captioned[i] for i in order]
        vision = self._embed(entries, g)
        captions = [e.caption for e in entries]
        # hard negatives: each swapped caption of the batch that is no caption of the batch
        negs = [n for n in dict.fromkeys(self.negatives.get(c) for c in captions) if n and n not in captions]
        tokens = torch.cat([self.tokens[order], *(self.negative_tokens[n][None] for n in negs)])
        text = self.model.forward_tower("text", tokens.to(self.device))
        targets = soft_targets(captions, captions + negs).to(self.device)
        return {"vision_text": info_nce(vision, text, targets)}

    @torch.no_grad()
    def _anchor_embeddings(self) -> dict[Path, torch.Tensor]:
        """Each anchor's embedding through the frozen vision tower, computed once (eval mode, every view)."""
        self.model.eval()
        out = {}
        step = self.encoder.batch_size
        for start in range(0, len(self.anchors), step):
            chunk = self.anchors[start : start + step]
            for modality in ("image", "video"):
                es = [e for e in chunk if e.modality == modality]
                if es:
                    x = torch.stack([self.x[id(e)].float() for e in es]).to(self.device)
                    out.update(zip([e.path for e in es], self.model.forward_tower("vision", x), strict=True))
        return out

    def _bind_step(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        losses = {}
        for salt, tower in enumerate(self.bound, 1):
            entries = self._batch(self.views[tower], step, salt)
            emb = self._embed(entries, g)
            anchor = torch.stack([self.frozen[e.pair] for e in entries])
            groups = [self.group[e.pair] for e in entries]
            losses[tower] = info_nce(emb, anchor, soft_targets(groups).to(self.device))
        return losses

    # -- checkpoints --------------------------------------------------------------------------------
    def _manifest(self, step: int) -> dict:
        return {"format": "modaverse-bind/1", "step": step, "stages": [list(s) for s in self.stages],
                "towers": [*self.clip, *self.bound], "arch": self.config.encoder.arch}

    def save(self, step: int) -> None:
        if not self.main:
            return
        from modaverse.encoder.imagebind.model import tower_prefixes

        tmp, name = step_folder(self.out, step)
        trained = tower_prefixes([*self.clip, *self.bound])
        torch.save({"model": {k: v for k, v in self.model.state_dict().items() if k.startswith(trained)},
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    }, tmp / STATE)
        write_json_atomic(tmp / MANIFEST, self._manifest(step))
        publish_step(self.out, tmp, name, keep=2)

    # -- 3. finish ----------------------------------------------------------------------------------
    def finish(self) -> dict:
        from modaverse.core.atomic import write_folder
        from modaverse.encoder.imagebind.towers import save_tower

        if not self.main:
            return {}
        towers = [*self.clip, *self.bound]

        def fill(tmp: Path) -> None:
            for t in towers:
                save_tower(tmp / f"{t}.safetensors", self.model, t,
                           self.tokenizer.json if t == "text" and self.tokenizer is not None else None)
            write_json_atomic(tmp / MANIFEST, self._manifest(self.total))

        final = self.out / "final"
        write_folder(final, fill)
        summary = {"output": str(final), "towers": towers, "stages": dict(self.stages), "steps": self.total,
                   "resumed_from_step": self.start_step, "last": self.last,
                   "seconds": round(time.perf_counter() - self.started, 2),
                   "bytes": sum(f.stat().st_size for f in final.glob("*.safetensors"))}
        write_json_atomic(self.out / "summary.json", summary)
        return summary


def bind(config: Config, **kwargs) -> dict:
    """Runs (or resumes) a bind run; returns its summary (also written to ``summary.json``)."""
    return BindRecipe(config, **kwargs).run()

