"""Committed text results against their reruns through the trainer.

``benchmarks/results/rerun/<name>.json`` is a rerun, through the trainer, of the result
that the earlier loops of ``metabook.bench`` wrote: ``benchmarks/results/legacy/<name>.json``
once the current code has regenerated ``benchmarks/results/<name>.json``, else that file.  Both score the same test episodes or the
same K-shot draws (same seeds and splits), so their units pair up: split means for
episodic files, draws for full-way files.  :func:`compare` gives each rerun's mean, the
old one, and the t-interval of the paired difference over those units.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metabook.bench.stats import t_interval

__all__ = ["compare", "table"]


def compare(results: str | Path = "benchmarks/results") -> list[dict]:
    """One row per (rerun file, K): old and new mean ± CI, and the paired split difference."""
    results = Path(results)
    rows = []
    paths = sorted((results / "rerun").glob("episodic_*.json")) + sorted(
        (results / "rerun").glob("fullway_*.json"))
    for new_path in paths:
        old_path = results / "legacy" / new_path.name
        if not old_path.is_file():
            old_path = results / new_path.name
        if not old_path.is_file():
            continue
        old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
        fullway = new_path.name.startswith("fullway_")
        ks = new["settings"]["k_shot"] if fullway else new["k_shot"]
        for k in ks:
            o, n = _entry(old, k, fullway), _entry(new, k, fullway)
            unit = "draws" if fullway else "split_means"
            if len(o[unit]) != len(n[unit]):
                raise ValueError(f"{new_path.name}: {len(n[unit])} {unit} vs {len(o[unit])} committed")
            d = np.subtract(n[unit], o[unit])
            half = t_interval(d)[1] if len(d) > 1 else float("nan")
            variant = new_path.stem.split("_", 2)[2]  # e.g. protonet-indomain
            rows.append({"file": new_path.name, "data": new["data"], "algo": variant, "k": k,
                         "old": (o["mean"], o["ci95"]), "new": (n["mean"], n["ci95"]),
                         "diff": (float(d.mean()), float(half)), "splits": len(d),
                         "protocol": "full-way" if fullway else "episodic",
                         "within_ci": abs(n["mean"] - o["mean"]) <= o["ci95"]})
    return rows


def _entry(record: dict, k: int, fullway: bool) -> dict:
    if fullway:
        return record["results"][f"{k}shot"]
    return record["summary"][f"{k}shot"]


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`compare`'s rows."""
    out = ["| protocol | dataset | learner | K | earlier loop | through the trainer | paired difference (t over splits or draws) | within the earlier CI |",
           "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r.get('protocol', 'episodic')} | {r['data']} | {r['algo']} | {r['k']} | {r['old'][0]:.2f} ± {r['old'][1]:.2f} | "
                   f"{r['new'][0]:.2f} ± {r['new'][1]:.2f} | {round(r['diff'][0], 2) + 0.0:+.2f} ± {r['diff'][1]:.2f} | "
                   f"{'yes' if r['within_ci'] else 'no'} |")
    return "\n".join(out)
