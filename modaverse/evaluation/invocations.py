"""``modaverse eval invocations``: does the model choose the right generator, with the right prompt?

For each record of a JSONL file (the training format), the conversation up to its last
assistant message is the request and that message is the reference. The model answers by
greedy decoding under the meta-response grammar. Two scores:

- ``capability_accuracy``: the answer calls the same capabilities, in order, as the
  reference (a text-only reply counts as the capability ``text``);
- ``prompt_exact_match``: additionally, every generator prompt (or, for a text reply, the
  text) is identical after collapsing whitespace;
- ``prompt_bleu``: corpus BLEU-4 of the prompts (or text) against the reference's, from
  pycocoevalcap's BLEU over lower-cased word tokens (no Java needed), so near misses
  count for something.

Every score is also given per form of record (``per_form``): ``text-only`` records can be
answered from the instruction alone, so they are kept apart from the ``media`` ones (one turn
with inputs) and the ``multi-turn`` ones (a later turn refers back to an input);
``media-bearing`` pools the last two, the figure that says whether the model reads its inputs.

Media features come from the same cache as training, so scoring a held-out set after a run
costs one encoding pass at most.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

from modaverse.config import Config
from modaverse.meta.schema import MetaResponse


def outcome(m: MetaResponse) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(capabilities, prompts) of a meta-response; a text-only reply is (("text",), (its text,))."""
    if not m.invocations:
        return ("text",), (" ".join(m.text.split()),)
    return tuple(i.capability for i in m.invocations), tuple(" ".join(i.prompt.split()) for i in m.invocations)


FORMS = ("text-only", "media", "multi-turn")


def form(record) -> str:
    """Which of :data:`FORMS` a record is: no input at all, one turn with inputs, or several turns."""
    users = [m for m in record.messages if m.role == "user"]
    if not any(m.media for m in users):
        return "text-only"
    return "multi-turn" if len(users) > 1 else "media"


def _words(prompts: tuple[str, ...]) -> str:
    return " ".join(re.findall(r"\w+", " ".join(prompts).lower())) or "_"


def _bleu4(hypotheses: dict[str, list[str]], references: dict[str, list[str]]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # it prints its own summary
        scores, _ = Bleu(4).compute_score(references, hypotheses)
    return float(scores[3])


def evaluate_invocations(config: Config, data: str | os.PathLike, *, limit: int | None = None,
                         progress: bool | None = None, pipe=None) -> dict:
    """Scores a model on a JSONL file; ``pipe`` reuses an already built :class:`ModaVerse`."""
    from tqdm.auto import tqdm

    from modaverse.data.conversation import messages, resolve_media
    from modaverse.data.records import read_records
    from modaverse.encoder.features import FeatureCache, LazyTable, file_key
    from modaverse.pipeline.assistant import ModaVerse

    pipe = pipe or ModaVerse.from_config(config)
    records = read_records(data, pipe.capabilities)[:limit]
    resolved = [resolve_media(r, data) for r in records]
    keys = [[file_key(m.path, m.modality) for m in media] for media in resolved]
    cache = FeatureCache.for_config(config)
    todo = [(k, m.path, m.modality) for media, ks in zip(resolved, keys, strict=True) for m, k in zip(media, ks, strict=True)]
    cache.ensure(todo, pipe.encoder)
    unique = list(dict.fromkeys(k for k, _, _ in todo))
    table, row = LazyTable(cache, unique), {k: i for i, k in enumerate(unique)}  # each record's rows when scored

    scored: list[tuple[str, str, bool, bool]] = []  # (capability label, form, capabilities right, all right)
    wrong, hypotheses, references = [], {}, {}
    disable = None if progress is None else not progress
    for pos, (rec, media, ks) in enumerate(tqdm(list(zip(records, resolved, keys, strict=True)), desc="eval",
                                                unit="item", disable=disable, file=sys.stderr, leave=False)):
        msgs = messages(rec, [m.modality for m in media])[:-1]
        feats = table[[row[k] for k in ks]]
        _, embeds = pipe.prepare_messages(msgs, feats, reserve=pipe.config.generation.max_new_tokens)
        reply = pipe.respond(embeds, constrained=True, temperature=0.0)
        want_caps, want_prompts = outcome(rec.messages[-1].meta_response)
        got_caps, got_prompts = outcome(reply.meta)
        ok, kind = got_caps == want_caps and got_prompts == want_prompts, form(rec)
        scored.append(("+".join(want_caps), kind, got_caps == want_caps, ok))
        # keyed by position: ids are optional, and id-less records must not overwrite each other
        hypotheses[pos], references[pos] = [_words(got_prompts)], [_words(want_prompts)]
        if not ok:
            wrong.append({"line": pos + 1, "id": rec.id, "form": kind,
                          "expected": rec.messages[-1].meta_response.as_dict(), "got": reply.meta.as_dict()})

    def scores(positions: list[int], bleu: bool = True) -> dict:
        if not positions:
            return {"items": 0}
        out = {"items": len(positions),
               "capability_accuracy": round(sum(scored[i][2] for i in positions) / len(positions), 4),
               "prompt_exact_match": round(sum(scored[i][3] for i in positions) / len(positions), 4)}
        if bleu:
            out["prompt_bleu"] = round(_bleu4({i: hypotheses[i] for i in positions},
                                              {i: references[i] for i in positions}), 4)
        return out

    groups = {f: [i for i, s in enumerate(scored) if s[1] == f] for f in FORMS}
    groups["media-bearing"] = sorted(groups["media"] + groups["multi-turn"])
    labels = sorted({s[0] for s in scored})
    return {
        "data": str(Path(data)),
        **scores(list(range(len(scored)))),
        "per_form": {name: scores(positions) for name, positions in groups.items()},
        "per_capability": {k: scores([i for i, s in enumerate(scored) if s[0] == k], bleu=False) for k in labels},
        "mistakes": len(wrong),
        "first_mistakes": wrong[:5],
        "all_mistakes": wrong,
    }
