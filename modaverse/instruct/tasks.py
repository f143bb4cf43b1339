"""What request number ``i`` asks for: a pure function of (seed, i).

Because a task depends on nothing but the seed and its index, a resumed run asks for
exactly the tasks the killed run had not finished, and ``--shard i/n`` processes take
disjoint index sets (``index % n == i``) without talking to each other.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from modaverse.instruct.sources import KINDS, Caption, Reference, Seed, SourceError, Templates

#: How many inputs a task of each kind attaches, and how often (capped by the modalities present).
INPUT_COUNTS: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "input-side": ((1, 2, 3), (0.6, 0.25, 0.15)),
    "output-side": ((0, 1, 2, 3), (0.3, 0.55, 0.1, 0.05)),
    "reasoning": ((0, 1, 2), (0.15, 0.65, 0.2)),
}


@dataclass(frozen=True)
class Task:
    """One request: the instruction kind, the files it is about, and what the prompt shows."""

    index: int
    kind: str
    inputs: tuple[Caption, ...]
    target: str | None  # the capability an output-side task must call
    examples: tuple[Seed, ...]
    references: tuple[Reference, ...]

    def describe(self) -> str:
        inputs = "+".join(c.modality for c in self.inputs) or "none"
        return f"{self.kind}, inputs: {inputs}" + (f", target: {self.target}" if self.target else "")


class Planner:
    """Draws tasks from the loaded sources; checks up front that every requested kind can be drawn."""

    def __init__(self, captions: Sequence[Caption], references: Sequence[Reference], seeds: Sequence[Seed],
                 kinds: Sequence[str] = KINDS, seed: int = 0, examples: int = 3, references_per_task: int = 5):
        self.kinds, self.seed = tuple(dict.fromkeys(kinds)), seed
        self.n_examples, self.n_references = examples, references_per_task
        self.captions: dict[str, list[Caption]] = defaultdict(list)
        for c in captions:
            self.captions[c.modality].append(c)
        self.modalities = sorted(self.captions)
        self.references: dict[str, list[Reference]] = defaultdict(list)
        for r in references:
            self.references[r.capability].append(r)
        self.targets = sorted(self.references)
        self.seeds: dict[str, list[Seed]] = defaultdict(list)
        for s in seeds:
            self.seeds[s.kind].append(s)
        for kind in self.kinds:
            if kind not in KINDS:
                raise SourceError(f"unknown instruction kind {kind!r}; known: {', '.join(KINDS)}")
            if not self.seeds[kind]:
                raise SourceError(f"the seeds file has no {kind} example, so {kind} requests cannot be made "
                                  f"(add one, or leave {kind} out of --kinds)")
        if "output-side" in self.kinds and not self.targets:
            raise SourceError("output-side requests need language references for at least one generator")

    def task(self, index: int) -> Task:
        rng = random.Random(f"modaverse-instructions/{self.seed}/{index}")
        kind = rng.choice(self.kinds)
        counts, weights = INPUT_COUNTS[kind]
        n = min(rng.choices(counts, weights)[0], len(self.modalities))
        if kind == "input-side":
            n = max(n, 1)
        inputs = tuple(rng.choice(self.captions[m]) for m in rng.sample(self.modalities, n))
        target = rng.choice(self.targets) if kind == "output-side" else None
        refs = self.references[target] if target else []
        references = tuple(rng.sample(refs, min(self.n_references, len(refs))))
        return Task(index, kind, inputs, target, self._examples(rng, kind, inputs, target), references)

    def _examples(self, rng: random.Random, kind: str, inputs: tuple[Caption, ...], target: str | None):
        """Seeds of the same kind; the closest one (same input modalities, same target) always among them."""
        pool = self.seeds[kind]
        want = sorted(c.modality for c in inputs)

        def closeness(s: Seed) -> int:
            return (sorted(i.modality for i in s.inputs) == want) + (target in s.outputs())

        best = max(closeness(s) for s in pool)
        first = rng.choice([s for s in pool if closeness(s) == best])
        rest = [s for s in pool if s is not first]
        chosen = [first, *rng.sample(rest, min(self.n_examples - 1, len(rest)))]
        rng.shuffle(chosen)
        return tuple(chosen)


def _attachments(inputs: Sequence[Caption] | Sequence, empty: str) -> str:
    if not inputs:
        return empty
    return "\n".join(f"{n}. {c.modality}: {c.caption}" for n, c in enumerate(inputs, 1))


def _example(seed: Seed) -> str:
    answer = {"instruction": seed.instruction, "response": seed.response.as_dict()}
    attached = "; ".join(f"{n}. {i.modality}: {i.caption}" for n, i in enumerate(seed.inputs, 1)) or "none"
    return f"Attachments: {attached}\n{json.dumps(answer, ensure_ascii=False)}"


def messages(task: Task, templates: Templates, capabilities: Sequence[str]) -> list[dict]:
    """The chat messages sent for a task: the system prompt, then the kind's template filled in."""
    fields = {
        "inputs": _attachments(task.inputs, "(none: the user attaches nothing)"),
        "examples": "\n\n".join(_example(s) for s in task.examples),
        "references": "\n".join(f"- {r.prompt}" for r in task.references),
        "target": task.target or "",
    }
    system = templates.system.substitute(capabilities=", ".join(capabilities))
    return [{"role": "system", "content": system},
            {"role": "user", "content": templates.kinds[task.kind].substitute(fields)}]
