"""The step loop of recipes made of consecutive stages, one optimiser each (``bind``, ``zoo train``).

Written once because the resume rules are subtle: a step's randomness is a pure function of
(seed, step), and a checkpoint taken at a stage's first step holds the *previous* stage's
optimiser, so the new stage must start fresh instead of loading it.
"""

from __future__ import annotations

import logging
import sys

import torch

from modaverse.training.run import Recipe

log = logging.getLogger("modaverse")


class StagedRecipe(Recipe):
    """``train()`` runs ``stages`` ([(name, steps)]) in order from ``start_step``.

    A subclass sets ``stages``, ``total``, ``start_step``, ``seed``, ``bar_off``, ``log_every`` and
    ``save_every`` in setup (and ``_resumed``, the loaded checkpoint state, when it resumes), and
    provides ``_begin_stage`` (optimiser and scheduler), ``_step`` (the losses of one step),
    ``_parameters`` (what is clipped) and ``save``.
    """

    desc = "train"
    main = True
    _resumed: dict | None = None

    def _begin_stage(self, stage: str) -> tuple[torch.optim.Optimizer, object]:
        raise NotImplementedError

    def _step(self, stage: str, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _parameters(self, stage: str) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def save(self, step: int) -> None:
        raise NotImplementedError

    def _restore(self, state: dict) -> None:
        """Loads the optimiser state of the stage a checkpoint was taken inside."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def _after_step(self, stage: str) -> None:
        """After each optimiser step (an EMA's update)."""

    def _end_stage(self, stage: str) -> None:
        """After a stage's last step, before that step's checkpoint."""

    def _skip_stage(self, stage: str) -> None:
        """For a stage a resumed run has already finished."""

    def train(self) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total, initial=self.start_step, unit="step", desc=self.desc,
                   disable=self.bar_off if self.main else True, file=sys.stderr, dynamic_ncols=True)
        self.last: dict = {}
        first = 0
        for stage, steps in self.stages:
            end = first + steps
            if self.start_step < end:
                self._run_stage(stage, first, end, bar)
            else:
                self._skip_stage(stage)
            first = end
        bar.close()

    def _run_stage(self, stage: str, first: int, end: int, bar) -> None:
        self.stage = stage
        self.optimizer, self.scheduler = self._begin_stage(stage)
        if self._resumed is not None and first < self.start_step:
            self._restore(self._resumed)
            self._resumed = None
        window: list[dict] = []
        for step in range(max(first, self.start_step), end):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            losses = self._step(stage, step, g)
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(self._parameters(stage), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._after_step(stage)
            window.append({k: float(v.detach()) for k, v in losses.items()})
            done = step + 1
            if done % self.log_every == 0 or done == end:
                self.last = {k: round(sum(w[k] for w in window) / len(window), 5) for k in window[0]}
                if not bar.disable:
                    bar.set_postfix(self.last)
                elif self.main:
                    log.info("step %d/%d %s %s", done, self.total, stage,
                             " ".join(f"{k} {v:.5f}" for k, v in self.last.items()))
                self.last["stage"] = stage
                window = []
            bar.update(1)
            if done == end:
                self._end_stage(stage)
            if self.save_every and done % self.save_every == 0 and done < self.total:
                self.save(done)
