"""``modaverse eval bind``: what each tower of the encoder perceives, per modality and attribute.

For every modality of a synthetic set's ``media.jsonl`` (or any pairs file with the same labels)
and every attribute its files carry (for pictures of two objects, ``objects``: the whole caption
among all two-object captions, so naming which shape has which colour), three measures per split (and, on the shifted split, per
moved parameter):

- **zero-shot top-1 through text**: each class is the mean text embedding of the captions that name
  it (prompt ensembling, as CLIP and ImageBind do); a file is given the nearest class. For audio,
  depth, thermal and IMU, which never saw a word in training, this is *emergent*: text reaches them
  only through the vision embeddings they were bound to;
- **cross-modal retrieval R@1 / R@5**: a view finds its own picture or video among all of its split's;
  a picture or video finds its own caption among the split's distinct captions;
- **an MLP probe** trained on the training split's embeddings: what the features carry at all,
  whatever text can read from them.

Some attributes cannot be seen by a sensor (a depth map has no colour; an IMU sees neither colour
nor shape). They are reported as *guards*: at chance they prove the set offers no shortcut.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from modaverse.config import Config
from modaverse.core.errors import ModaverseError

#: Attributes scored per modality; (modality, attribute) in GUARDS must stay at chance.
ATTRIBUTES = {"image": ("colour", "shape", "objects"), "video": ("colour", "shape", "motion"), "audio": ("sound",),
              "depth": ("shape", "colour"), "thermal": ("colour", "shape"), "imu": ("motion", "colour", "shape")}
GUARDS = {("depth", "colour"), ("imu", "colour"), ("imu", "shape")}
#: Modalities bound to vision only: their zero-shot accuracy through text is emergent.
NEVER_WITH_TEXT = ("audio", "depth", "thermal", "imu")
#: Whose captions a modality's prompts are: pictures' for depth and thermal, videos' for IMU and audio.
PROMPTS_OF = {"image": "image", "depth": "image", "thermal": "image", "video": "video", "imu": "video",
              "audio": "video"}


def class_prompts(modality: str, attribute: str) -> dict[str, list[str]]:
    """Each class's prompt ensemble: every caption of the synthetic vocabulary that names it."""
    from modaverse.data.scenes import COLOURS, DIRECTIONS, SHAPES, SOUNDS
    from modaverse.data.views import SOUND_OF

    if attribute == "objects":  # a two-object picture's whole caption: which shape has which colour
        pairs = [(c1, c2) for i, c1 in enumerate(COLOURS) for c2 in list(COLOURS)[i + 1:]]
        captions = [f"a {c1} {s1} and a {c2} {s2}" for c1, c2 in pairs for s1 in SHAPES for s2 in SHAPES]
        return {c: [c] for c in captions}
    video = PROMPTS_OF[modality] == "video"
    captions = [({"colour": c, "shape": s, "motion": d}, f"a {c} {s} moving {d}" if video else f"a {c} {s}")
                for c in COLOURS for s in SHAPES for d in (DIRECTIONS if video else ("",))]
    if attribute == "sound":  # a video's sound is its colour's (data.views.SOUND_OF)
        return {k: [t for facts, t in captions if SOUND_OF[facts["colour"]] == k] for k in SOUNDS}
    values = {"colour": COLOURS, "shape": SHAPES, "motion": DIRECTIONS}[attribute]
    return {v: [t for facts, t in captions if facts[attribute] == v] for v in values}


def class_embeddings(encoder, prompts: dict[str, list[str]]) -> torch.Tensor:
    """``[classes, D]``: each class's prompt ensemble, its normalised text embeddings averaged, normalised."""
    return torch.stack([F.normalize(F.normalize(encoder.embed_text(ts), dim=-1).mean(0), dim=0)
                        for ts in prompts.values()])


def _label(entry, attribute: str) -> str | None:
    if attribute == "objects":
        return entry.caption if entry.labels.get("others") else None
    if entry.labels.get("others"):  # two-object pictures have no single colour or shape
        return None
    return entry.labels.get(attribute)


def _embed(encoder, entries) -> torch.Tensor:
    out = torch.empty(len(entries), encoder.dim)
    by_modality = defaultdict(list)
    for i, e in enumerate(entries):
        by_modality[e.modality].append(i)
    for modality, idx in by_modality.items():
        emb, _ = encoder.embed([entries[i].path for i in idx], modality)
        out[idx] = emb
    return F.normalize(out, dim=-1)


def _probe(x: torch.Tensor, y: torch.Tensor, classes: int, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.GELU(), torch.nn.Linear(128, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1 / max(1, p.shape[-1]) ** 0.5))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(400):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _share(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else None


def evaluate_binding(config: Config, data: str | Path, probe_data: str | Path | None = None,
                     progress: bool | None = None) -> dict:
    """Scores the config's encoder on ``data`` (held-out splits), its probes trained on ``probe_data``'s
    training split (default: ``data``'s own)."""
    from modaverse.core.modality import TOWER
    from modaverse.data.pairs import read_pairs
    from modaverse.encoder.embed import Encoder
    from modaverse.encoder.text import TextTokenizer, word_level_json

    towers = {TOWER[m] for m in config.encoder.modalities}
    seen = [m for m, t in TOWER.items() if t in towers]  # what the built towers read (a vision tower: both)
    entries = read_pairs(data, splits=None)
    notes = []
    unbuilt = sorted({e.modality for e in entries} - set(seen))
    if unbuilt:  # scoring a subset of the towers is a choice (encoder.modalities), not an error
        notes.append(f"not scored: {', '.join(unbuilt)} (not in encoder.modalities)")
        entries = [e for e in entries if e.modality in seen]
    held = [e for e in entries if e.split != "train"]
    train = [e for e in (read_pairs(probe_data, splits=("train",)) if probe_data else entries)
             if e.split == "train" and e.modality in seen]
    if not held:
        raise ModaverseError(f"{data}: no held-out line (split test or shifted) of {', '.join(seen)} to score")
    encoder = Encoder.from_config(config.encoder, config.media, text=True)  # after the data is checked
    if encoder.tokenizer is None:  # a random text tower: any tokenizer honouring its contract will do
        c = encoder.model.config
        words = [t for m in ATTRIBUTES for a in ATTRIBUTES[m] for ts in class_prompts(m, a).values() for t in ts]
        encoder.tokenizer = TextTokenizer(word_level_json(words, c.text_vocab_size), c.text_context_length,
                                          c.text_vocab_size, "a word-level tokenizer of the prompts")
        notes.append("the text tower is not a trained one (no tokenizer came with it): zero-shot is at chance")
    emb_held, emb_train = _embed(encoder, held), _embed(encoder, train) if train else None
    anchor_emb = {e.path: emb_held[i] for i, e in enumerate(held) if e.modality in ("image", "video")}
    report: dict = {"encoder": {"arch": config.encoder.arch, "weights": config.encoder.weights,
                                "tower_weights": config.encoder.tower_weights}, "data": str(data),
                    "probe_data": str(probe_data or data), "modalities": {}, "notes": notes}
    splits = sorted({e.split for e in held})
    for modality, attributes in ATTRIBUTES.items():
        rows = [i for i, e in enumerate(held) if e.modality == modality]
        if not rows:
            continue
        out: dict = {"never_paired_with_text": modality in NEVER_WITH_TEXT, "files": len(rows), "attributes": {}}
        for attribute in attributes:
            prompts = class_prompts(modality, attribute)
            names = list(prompts)
            text = class_embeddings(encoder, prompts)
            labelled = [i for i in rows if _label(held[i], attribute) in prompts]
            if not labelled:
                continue
            guess = (emb_held[labelled] @ text.T).argmax(1).tolist()
            zero = {i: names[g] == _label(held[i], attribute) for i, g in zip(labelled, guess, strict=True)}
            probe_ok = {}
            tr = [j for j, e in enumerate(train) if e.modality == modality and _label(e, attribute) in prompts]
            if len(tr) >= 20 and len({_label(train[j], attribute) for j in tr}) > 1:
                y = torch.tensor([names.index(_label(train[j], attribute)) for j in tr])
                net = _probe(emb_train[tr], y, len(names))
                with torch.no_grad():
                    pred = net(emb_held[labelled]).argmax(1).tolist()
                probe_ok = {i: names[p] == _label(held[i], attribute) for i, p in zip(labelled, pred, strict=True)}
            result: dict = {"classes": len(names), "chance": round(1 / len(names), 4),
                            "guard": (modality, attribute) in GUARDS}
            for split in splits:
                idx = [i for i in labelled if held[i].split == split]
                result[split] = {"n": len(idx), "zero_shot": _share(zero[i] for i in idx),
                                 "probe": _share(probe_ok[i] for i in idx) if probe_ok else None}
            axes = defaultdict(list)
            for i in labelled:
                for axis in held[i].labels.get("params", {}).get("shifted", ()):
                    axes[axis].append(zero[i])
            if axes:
                result["shifted_axes_zero_shot"] = {a: _share(v) for a, v in sorted(axes.items())}
            out["attributes"][attribute] = result
        out["retrieval"] = _retrieval(held, rows, emb_held, anchor_emb, encoder, splits)
        report["modalities"][modality] = out
    return report


def _retrieval(held, rows, emb, anchor_emb, encoder, splits) -> dict:
    """R@1 / R@5: a view finds its own picture or video among its split's; a picture or video its own caption."""
    kind, split_of = {e.path: e.modality for e in held}, {e.path: e.split for e in held}
    out = {}
    for split in splits:
        views = [i for i in rows if held[i].split == split and held[i].pair in kind]  # its anchor's tower was built
        captioned = [i for i in rows if held[i].split == split and held[i].caption]
        if views:
            anchor_kind = kind[held[views[0]].pair]
            pool = sorted(p for p in anchor_emb if kind[p] == anchor_kind and split_of[p] == split)
            cand, idx = torch.stack([anchor_emb[p] for p in pool]), views
            target = torch.tensor([pool.index(held[i].pair) for i in views])
        elif captioned:
            captions = sorted({held[i].caption for i in captioned})
            cand, idx = F.normalize(encoder.embed_text(captions), dim=-1), captioned
            target = torch.tensor([captions.index(held[i].caption) for i in captioned])
        else:
            continue
        hit = (emb[idx] @ cand.T).argsort(dim=1, descending=True) == target[:, None]
        out[split] = {"r1": round(hit[:, :1].any(1).float().mean().item(), 4),
                      "r5": round(hit[:, :5].any(1).float().mean().item(), 4), "candidates": len(cand)}
    return out


def table(reports: dict[str, dict]) -> str:
    """Markdown: one row per modality, attribute and split; a column pair (zero-shot, probe) per encoder."""
    names = list(reports)
    head = "| modality | attribute | split | " + " | ".join(f"{n}: zero-shot | {n}: probe" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    first = reports[names[0]]["modalities"]
    for modality, m in first.items():
        for attribute, a in m["attributes"].items():
            tag = " (guard: chance is right)" if a["guard"] else ""
            emergent = " (emergent)" if m["never_paired_with_text"] else ""
            for split in ("test", "shifted"):
                if split not in a:
                    continue
                cells = []
                for n in names:
                    r = reports[n]["modalities"].get(modality, {}).get("attributes", {}).get(attribute, {}).get(split, {})
                    cells += [_pct(r.get("zero_shot")), _pct(r.get("probe"))]
                lines.append(f"| {modality}{emergent} | {attribute}{tag} | {split} | " + " | ".join(cells) + " |")
    lines += ["", "| modality | retrieves | split | " + " | ".join(f"{n}: R@1 | {n}: R@5" for n in names) + " |",
              "|" + "---|" * (3 + 2 * len(names))]
    for modality, m in first.items():
        what = "its caption" if modality in ("image", "video") else f"its {PROMPTS_OF[modality]}"
        for split in m["retrieval"]:
            cells = []
            for n in names:
                r = reports[n]["modalities"].get(modality, {}).get("retrieval", {}).get(split, {})
                cells += [_pct(r.get("r1")), _pct(r.get("r5"))]
            lines.append(f"| {modality} | {what} (of {m['retrieval'][split]['candidates']}) | {split} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def dump(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False)
