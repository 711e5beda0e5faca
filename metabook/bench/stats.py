"""Statistics for results that survive review.

* :func:`t_interval`: a Student-t interval over a few independent units (split means,
  seeds, draws), which is what varies when a reader reruns the protocol;
* :func:`pack_accuracies` / :func:`unpack_accuracies`: per-episode accuracies stored
  compactly in a result JSON, so two methods evaluated on the same episodes can be paired;
* :func:`paired_difference`: method minus baseline, episode by episode, with a t-interval
  over the split means of the differences.
"""
from __future__ import annotations

import base64
import math
import zlib
from typing import Sequence

import numpy as np

__all__ = ["t_interval", "pack_accuracies", "unpack_accuracies", "paired_difference"]


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval, ``t_{n-1} * std / sqrt(n)`` (ddof=1).

    Use it over independent units: the 5 split means of an episodic run, or the draws of a
    full-way run.  One value has no spread to estimate and raises.
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ValueError(f"t_interval needs at least 2 values, got {v.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    q = float(t.ppf(0.5 + confidence / 2, df=v.size - 1))
    return float(v.mean()), q * float(v.std(ddof=1)) / math.sqrt(v.size)


def pack_accuracies(accs: Sequence[float], n_query_total: int) -> str:
    """Episode accuracies (%) as a zlib-compressed, base64 string of correct-query counts.

    ``n_query_total`` is the number of queries per episode (N-way x queries per class); every
    accuracy must be a whole number of them, so nothing is rounded away.
    """
    if n_query_total < 1 or n_query_total > 65535:
        raise ValueError(f"n_query_total must be in [1, 65535], got {n_query_total}")
    counts = np.asarray(accs, dtype=np.float64) * n_query_total / 100.0
    whole = np.rint(counts)
    if np.any(np.abs(counts - whole) > 1e-3) or np.any(whole < 0) or np.any(whole > n_query_total):
        raise ValueError("accuracies are not whole numbers of correct queries out of "
                         f"{n_query_total}; pass the number of queries per episode")
    raw = whole.astype("<u2").tobytes()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def unpack_accuracies(packed: str, n_query_total: int) -> np.ndarray:
    """Inverse of :func:`pack_accuracies`: the accuracies (%) as a float64 array."""
    counts = np.frombuffer(zlib.decompress(base64.b64decode(packed)), dtype="<u2")
    return counts.astype(np.float64) * 100.0 / n_query_total


def paired_difference(method: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]],
                      confidence: float = 0.95) -> dict:
    """Method minus baseline on the same episodes, one list of accuracies per split.

    Returns the mean difference, its t-interval over the splits' mean differences, and the
    number of splits and episodes.  Splits of different lengths are refused: they were not
    evaluated on the same episodes.
    """
    if len(method) != len(baseline) or not method:
        raise ValueError(f"method has {len(method)} splits and baseline {len(baseline)}; "
                         "they must be the same, non-zero number")
    diffs = []
    for i, (m, b) in enumerate(zip(method, baseline)):
        m, b = np.asarray(m, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if m.shape != b.shape:
            raise ValueError(f"split {i}: method has {m.size} episodes and baseline {b.size}; "
                             "paired differences need the same episodes")
        diffs.append(float((m - b).mean()))
    mean, half = t_interval(diffs, confidence) if len(diffs) > 1 else (diffs[0], float("nan"))
    return {"mean": mean, "ci95": half, "split_diffs": diffs, "splits": len(diffs),
            "episodes": int(sum(len(m) for m in method))}
