"""Which intents of the other datasets overlap a target dataset's intents.

The cross-dataset setting meta-trains MiniLM on the labelled intents of the *other*
datasets before it meets the target. Their intents can mean the same as the target's test
intents under another name (CLINC150's ``alarm`` and HWU64's ``alarm/set``), and seeing
them is a peek at the test classes. This command lists those intents, so that
``python -m metabook.bench pretrain --overlap FILE`` removes them first. An intent of another
dataset is listed when

* it belongs to a whole domain that a rule names as overlapping (:data:`DOMAIN_RULES`: for
  BANKING77, CLINC150's ``banking`` and ``credit_cards`` domains; for CLINC150, all of
  BANKING77, which lies inside those two domains); or
* the cosine similarity between its centroid and the centroid of some target intent is at
  least ``--threshold`` (default 0.7). A centroid is the normalised mean of the frozen
  MiniLM embeddings of all the intent's sentences.

The target's intents of *every* class split are used, so one list serves all splits. The
list records each removed intent, its closest target intent and the cosine, and the
command that rewrites it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

from metabook.bench.common import hardware, provenance, versions
from metabook.data.intents import DATASETS, load_dataset
from metabook.device import default_device

__all__ = ["DOMAIN_RULES", "centroids", "overlap", "read_overlap"]

#: ``{target: {other dataset: [its domains that overlap the target as a whole]}}``;
#: ``"*"`` is every intent of that dataset.
DOMAIN_RULES: dict[str, dict[str, list[str]]] = {
    "banking77": {"clinc150": ["banking", "credit_cards"]},
    "clinc150": {"banking77": ["*"]},
}


@torch.no_grad()
def centroids(encoder, texts: list[str], labels: list[str]) -> tuple[list[str], torch.Tensor]:
    """Sorted class names and their unit-length mean embeddings, ``(C, D)``."""
    emb = encoder.encode(texts, cache=True).float().cpu()
    y = np.asarray(labels)
    names = sorted(set(labels))
    rows = [torch.nn.functional.normalize(emb[torch.from_numpy(y == c)].mean(0), dim=0) for c in names]
    return names, torch.stack(rows)


def overlap(target: str, encoder, threshold: float = 0.7, data_dir=None) -> list[dict]:
    """The intents of the datasets other than ``target`` that overlap it (see the module doc)."""
    if target not in DATASETS:
        raise ValueError(f"unknown target {target!r}; have {sorted(DATASETS)}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    tgt = load_dataset(target, data_dir=data_dir, progress=False)
    t_names, t_cent = centroids(encoder, tgt.texts, tgt.labels)
    out = []
    for other in (d for d in DATASETS if d != target):
        ds = load_dataset(other, data_dir=data_dir, progress=False)
        o_names, o_cent = centroids(encoder, ds.texts, ds.labels)
        sim = o_cent @ t_cent.T
        best, idx = sim.max(1)
        domains = DOMAIN_RULES.get(target, {}).get(other, [])
        for i, name in enumerate(o_names):
            dom = ds.domain_of.get(name)
            by_domain = "*" in domains or dom in domains
            if by_domain or best[i] >= threshold:
                out.append({"dataset": other, "intent": name, "domain": dom,
                            "closest_target_intent": t_names[int(idx[i])], "cosine": round(float(best[i]), 4),
                            "reason": "domain rule" if by_domain else f"cosine >= {threshold}"})
    return out


def read_overlap(path: str | os.PathLike, target: str) -> dict[str, set[str]]:
    """``{dataset: {intent, ...}}`` to remove, from a file this command wrote for ``target``."""
    with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    if rec.get("benchmark") != "overlap" or rec.get("target") != target:
        raise ValueError(f"{path} is not an overlap list for {target!r} "
                         f"(it is for {rec.get('target')!r}); make one with `python -m metabook.bench "
                         f"overlap --target {target}`")
    out: dict[str, set[str]] = {}
    for row in rec["removed"]:
        out.setdefault(row["dataset"], set()).add(row["intent"])
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, choices=sorted(DATASETS))
    p.add_argument("--threshold", type=float, default=0.7, help="centroid cosine that counts as overlap")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="default benchmarks/results/overlap/<target>.json")


def run(args: argparse.Namespace) -> int:
    from metabook.encoders import MiniLMEncoder

    device = default_device()
    removed = overlap(args.target, MiniLMEncoder(device=device), args.threshold, args.data_dir)
    out = args.out or f"benchmarks/results/overlap/{args.target}.json"
    counts = {d: sum(r["dataset"] == d for r in removed) for d in DATASETS if d != args.target}
    rec = {"benchmark": "overlap", **provenance("overlap"), "target": args.target,
           "threshold": args.threshold, "domain_rules": DOMAIN_RULES.get(args.target, {}),
           "how": "centroid of frozen all-MiniLM-L6-v2 embeddings of every sentence of an intent; "
                  "an intent of another dataset is removed when a domain rule names its domain or its "
                  "centroid's cosine with some intent of the target reaches the threshold",
           "counts": counts, "removed": removed, "versions": versions(), "hardware": hardware(device)}
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=2)
    print(f"{args.target}: remove " + ", ".join(f"{n} of {d}" for d, n in counts.items()) + f"; wrote {out}",
          file=sys.stderr)
    return 0
