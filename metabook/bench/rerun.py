"""Committed episodic results against their reruns through the trainer.

``benchmarks/results/rerun/<name>.json`` is a rerun, by the current code, of the
committed ``benchmarks/results/<name>.json``.  Both score the same test episodes
(the same seeds and splits), so their split means pair up: :func:`compare` gives
each rerun's mean, the old one, and the t-interval of the paired difference
over the splits.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["compare", "table"]


def _t95(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def compare(results: str | Path = "benchmarks/results") -> list[dict]:
    """One row per (rerun file, K): old and new mean ± CI, and the paired split difference."""
    results = Path(results)
    rows = []
    for new_path in sorted((results / "rerun").glob("episodic_*.json")):
        old_path = results / new_path.name
        if not old_path.is_file():
            continue
        old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
        for k in new["k_shot"]:
            o, n = old["summary"][f"{k}shot"], new["summary"][f"{k}shot"]
            d = np.subtract(n["split_means"], o["split_means"])
            half = _t95(len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            rows.append({"file": new_path.name, "data": new["data"], "algo": new["algo"], "k": k,
                         "old": (o["mean"], o["ci95"]), "new": (n["mean"], n["ci95"]),
                         "diff": (float(d.mean()), float(half)), "splits": len(d),
                         "within_ci": abs(n["mean"] - o["mean"]) <= o["ci95"]})
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`compare`'s rows."""
    out = ["| dataset | learner | K | committed | through the trainer | paired difference (t, splits) | within the committed CI |",
           "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['data']} | {r['algo']} | {r['k']} | {r['old'][0]:.2f} ± {r['old'][1]:.2f} | "
                   f"{r['new'][0]:.2f} ± {r['new'][1]:.2f} | {round(r['diff'][0], 2) + 0.0:+.2f} ± {r['diff'][1]:.2f} | "
                   f"{'yes' if r['within_ci'] else 'no'} |")
    return "\n".join(out)
