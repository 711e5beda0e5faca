"""Helpers for Chapter 6 (applications): a new domain from five examples, SMLMT, deployment.

The chapter's cells call these so that they show the experiment, not its plumbing:

* :func:`meta_train_encoder` -- ProtoNet meta-training of a sentence encoder, as the
  benchmarks do it;
* :class:`Domain`, :func:`largest_test_domain`, :func:`support_indices` and :func:`deploy`
  -- one scenario of a dataset as a new domain, its support shots and its accuracy;
* :func:`confusion_matrix`, :func:`plot_confusion`, :func:`intent_families`,
  :func:`sibling_groups` and :func:`share_within_groups` -- where the errors go;
* :func:`sample_per_class`, :func:`downstream_accuracy` and :func:`pretext_accuracy` --
  the tests of §6.2;
* :func:`latency`, :func:`flag_rate` and :func:`leave_one_out_flags` -- the deployment
  notes of §6.3;
* :func:`mean_pm`, :func:`paired_verdict`, :func:`downstream_sentence` and
  :func:`student_t_widening` -- numbers and sentences generated from the measurements.

matplotlib is imported only inside the function that draws.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from metabook.algorithms.protonet import ProtoNet
from metabook.data.intents import IntentDataset
from metabook.tasks import Episode, EpisodeSampler
from metabook.train import TrainLog, evaluate, meta_train

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["meta_train_encoder", "Domain", "largest_test_domain", "support_indices",
           "Deployment", "deploy", "confusion_matrix", "plot_confusion", "intent_families", "sibling_groups",
           "share_within_groups", "sample_per_class", "downstream_accuracy", "pretext_accuracy",
           "latency", "flag_rate", "leave_one_out_flags", "mean_pm", "paired_verdict",
           "downstream_sentence", "student_t_widening"]

_COSINE = ProtoNet(distance="cosine")  # nearest prototype by cosine similarity


# --------------------------------------------------------------------------------------
# training
def meta_train_encoder(encoder: torch.nn.Module, sampler: Any, steps: int, *, lr: float = 2e-5,
                       scale: float = 20.0, device: torch.device | str | None = None,
                       progress: bool = True) -> TrainLog:
    """ProtoNet meta-training of ``encoder`` itself, as the benchmarks do it.

    Cosine logits with temperature ``scale``, AdamW (weight decay 0.01) on the trainable
    parameters, gradient norm clipped to 1, one episode per step from
    ``sampler.batches(1)``; dropout is on while training and off afterwards.

    Returns:
        the :class:`~metabook.train.TrainLog` (per-step query losses, seconds).
    """
    params = [p for p in encoder.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the encoder has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    learner = ProtoNet(encoder, distance="cosine", scale=scale)
    encoder.train()
    try:
        return meta_train(learner, sampler.batches(1), opt, steps, clip_grad=1.0, device=device,
                          progress=progress)
    finally:
        encoder.eval()


# --------------------------------------------------------------------------------------
# §6.1: a new domain
@dataclass
class Domain:
    """All utterances of one scenario: ``labels[i]`` indexes ``intents``."""

    name: str
    intents: list[str]
    texts: list[str]
    labels: np.ndarray

    @property
    def short(self) -> list[str]:
        """Intent names without the ``scenario/`` prefix."""
        return [c.split("/", 1)[-1] for c in self.intents]


def largest_test_domain(dataset: IntentDataset, split_id: str = "01") -> Domain:
    """The scenario with the most intents among those whose intents are all test intents of
    the class split ``split_id`` (ties: the first in class-name order)."""
    test = set(dataset.split(split_id)["test"])
    intents_of: dict[str, list[str]] = {}
    for c in dataset.class_names:
        intents_of.setdefault(dataset.domain_of[c], []).append(c)
    candidates = [s for s, cs in intents_of.items() if set(cs) <= test]
    if not candidates:
        raise ValueError(f"no scenario of split {split_id} lies entirely in its test classes")
    name = max(candidates, key=lambda s: len(intents_of[s]))
    intents = intents_of[name]
    idx = [i for i, c in enumerate(dataset.labels) if dataset.domain_of[c] == name]
    labels = np.array([intents.index(dataset.labels[i]) for i in idx])
    return Domain(name, intents, [dataset.texts[i] for i in idx], labels)


def support_indices(labels: np.ndarray, shots: int, draw: int) -> np.ndarray:
    """``shots`` random indices of each class ``0 .. labels.max()``, drawn with seed ``draw``."""
    rng = np.random.default_rng(draw)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                           for c in range(int(labels.max()) + 1)])


@dataclass
class Deployment:
    """One draw of the shots: accuracy (%) on the rest, which examples were queries, and the
    predicted labels of those queries."""

    accuracy: float
    query: np.ndarray
    pred: np.ndarray


def deploy(embeddings: torch.Tensor, labels: np.ndarray, shots: int, draw: int) -> Deployment:
    """Nearest-prototype (cosine) classification of every example that is not a support shot."""
    sup = support_indices(labels, shots, draw)
    query = np.setdiff1d(np.arange(len(labels)), sup)
    sy = torch.as_tensor(labels[sup])
    pred = _COSINE.predict(embeddings[sup][None], sy[None], embeddings[query][None])[0].numpy()
    return Deployment(100.0 * float((pred == labels[query]).mean()), query, pred)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Row-normalised confusion matrix in percent: row = true class, column = predicted."""
    cm = np.zeros((n, n))
    np.add.at(cm, (np.asarray(true), np.asarray(pred)), 1)
    return 100 * cm / cm.sum(1, keepdims=True).clip(1)


def plot_confusion(ax: "Axes", cm: np.ndarray, names: Sequence[str], title: str) -> Any:
    """Draw a percentage confusion matrix with its cells written in; returns the image."""
    n = len(names)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            if cm[i, j] >= 0.5:
                ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > 60 else "black")
    ax.set_xticks(range(n), names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted intent")
    ax.set_title(title, fontsize=10)
    return im


def _prefix(name: str) -> str:
    return name.split("_", 1)[0]


def intent_families(names: Sequence[str]) -> dict[str, list[str]]:
    """Families of sibling intents: the names that share the part before the first ``_``
    (``hue_lightup``, ``hue_lightdim``), for every prefix shared by two names or more."""
    out: dict[str, list[str]] = {}
    for n in names:
        if "_" in n:
            out.setdefault(_prefix(n), []).append(n)
    return {p: members for p, members in out.items() if len(members) > 1}


def sibling_groups(names: Sequence[str]) -> list[int]:
    """A family index per intent (see :func:`intent_families`); an intent outside every
    family gets an index of its own."""
    families = intent_families(names)
    keys: dict[str, int] = {}
    out = []
    for i, n in enumerate(names):
        key = _prefix(n) if "_" in n and _prefix(n) in families else f"{n}#{i}"
        out.append(keys.setdefault(key, len(keys)))
    return out


def share_within_groups(true: np.ndarray, pred: np.ndarray, groups: Sequence[int]) -> float:
    """Percentage of the errors (``pred != true``) whose predicted class is in the true
    class's family; ``nan`` when there is no error."""
    g = np.asarray(groups)
    wrong = np.asarray(pred) != np.asarray(true)
    if not wrong.any():
        return float("nan")
    return 100.0 * float((g[np.asarray(true)[wrong]] == g[np.asarray(pred)[wrong]]).mean())


# --------------------------------------------------------------------------------------
# §6.2: downstream and pretext tests
def sample_per_class(labels: np.ndarray, classes: Sequence[str], per_class: int | None,
                     seed: int = 0) -> np.ndarray:
    """Sorted indices of ``per_class`` random examples of each class (all when ``None``)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class is not None:
            if per_class > len(idx):
                raise ValueError(f"class {c!r} has {len(idx)} examples, fewer than {per_class}")
            idx = rng.choice(idx, per_class, replace=False)
        parts.append(idx)
    return np.sort(np.concatenate(parts))


def downstream_accuracy(embeddings: torch.Tensor, labels: Sequence[Any], k_shot: int,
                        episodes: int, n_way: int = 5, n_query: int = 5, seed: int = 1) -> dict:
    """Nearest-prototype (cosine) accuracy on ``episodes`` N-way K-shot episodes of the
    embedded examples; the episodes depend only on the labels and ``seed``, so two encoders
    are scored on the same ones. Returns :func:`metabook.train.evaluate`'s dict."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    sampler = EpisodeSampler(list(labels), n_way, k_shot, n_query, data=embeddings, seed=seed,
                             num_episodes=episodes)
    batch = max(d for d in range(1, min(50, episodes) + 1) if episodes % d == 0)  # none dropped
    return evaluate(_COSINE.predict, sampler.batches(batch))


def pretext_accuracy(encoder: Any, episodes: Sequence[Episode]) -> dict:
    """Nearest-prototype (cosine) accuracy of ``encoder`` on text episodes (e.g. held-out
    SMLMT episodes), all sentences embedded in one batched ``encoder.encode`` call."""
    texts = [s for e in episodes for s in [*e.support_x, *e.query_x]]
    emb = encoder.encode(texts)
    out, start = [], 0
    for e in episodes:
        ns, nq = len(e.support_x), len(e.query_x)
        out.append(replace(e, support_x=emb[start:start + ns],
                           query_x=emb[start + ns:start + ns + nq]))
        start += ns + nq
    return evaluate(_COSINE.predict, out)


# --------------------------------------------------------------------------------------
# §6.3: deployment
def latency(encoder: Any, texts: Sequence[str], prototypes: torch.Tensor,
            batch_texts: Sequence[str], repeats: int = 100) -> dict[str, Any]:
    """Time a live classifier, one utterance at a time.

    Returns ``{"encode_ms": [...], "score_us": [...], "batch_ms": float}``: the time to embed
    each of ``texts`` alone, to score its embedding against ``prototypes`` (mean of
    ``repeats`` runs), and the time per utterance to embed ``batch_texts`` in one call.
    """
    encoder.encode(list(texts[:1]))  # warm-up
    encode_ms, score_us = [], []
    for s in texts:
        t = time.perf_counter()
        e = encoder.encode([s])
        encode_ms.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(repeats):
            int((e @ prototypes.T).argmax())
        score_us.append(1e6 * (time.perf_counter() - t) / repeats)
    t = time.perf_counter()
    encoder.encode(list(batch_texts))
    batch_ms = 1e3 * (time.perf_counter() - t) / max(1, len(batch_texts))
    return {"encode_ms": encode_ms, "score_us": score_us, "batch_ms": batch_ms}


def flag_rate(sim_in: torch.Tensor, sim_out: torch.Tensor, keep: float = 95.0) -> float:
    """Percentage of ``sim_out`` below the threshold that keeps ``keep``% of ``sim_in``.

    ``sim_*`` are similarities to the nearest prototype of in-scope and unknown utterances.
    """
    threshold = np.percentile(np.asarray(sim_in, dtype=float), 100 - keep)
    return 100.0 * float((np.asarray(sim_out, dtype=float) < threshold).mean())


def leave_one_out_flags(embeddings: torch.Tensor, labels: np.ndarray, query: np.ndarray,
                        prototypes: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """For each class ``u``: drop its prototype and flag its queries with :func:`flag_rate`,
    the threshold set on the other classes' queries. Returns ``{name: % flagged}``."""
    out = {}
    for u, name in enumerate(names):
        keep = [c for c in range(len(names)) if c != u]
        P = prototypes[keep]
        inside, left = query[labels[query] != u], query[labels[query] == u]
        out[name] = flag_rate((embeddings[inside] @ P.T).max(1).values,
                              (embeddings[left] @ P.T).max(1).values)
    return out


# --------------------------------------------------------------------------------------
# numbers and sentences from the measurements
def mean_pm(mean: float, ci: float, signed: bool = False) -> str:
    """``"81.5 ± 2.1"`` (``"+0.6 ± 0.2"`` when ``signed``).

    One decimal, or two when one decimal would make a mean and a half-width that differ
    look equal (``"+0.33 ± 0.30"``, not ``"+0.3 ± 0.3"``), so that the text agrees with
    :func:`paired_verdict`.
    """
    digits = 1
    if abs(mean) != ci and round(abs(mean), 1) == round(ci, 1):
        digits = 2
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {ci:.{digits}f}"


def paired_verdict(mean: float, ci: float) -> str:
    """Words for a paired difference and its 95% CI: a gain, a loss, or no measurable change."""
    if abs(mean) <= ci:
        return "no measurable change, the interval contains 0"
    kind = "a gain" if mean > 0 else "a loss"
    return f"{kind}, the interval excludes 0"


def downstream_sentence(diffs: Mapping[str, tuple[float, float]], small: float = 2.0) -> str:
    """One sentence on paired downstream differences ``{task: (mean, ci)}`` in points.

    Says whether every difference, with its interval, stays within ``±small`` points.
    """
    if not diffs:
        raise ValueError("no differences to describe")
    reach = max(abs(m) + ci for m, ci in diffs.values())
    if reach <= small:
        return (f"On every downstream test the change, with its 95% interval, stays within "
                f"{reach:.1f} points of zero: at this size, SMLMT barely moves the encoder "
                f"on intents.")
    parts = ", ".join(f"{task} {m:+.1f} ± {ci:.1f}" for task, (m, ci) in diffs.items())
    return (f"The downstream changes ({parts} points) reach beyond ±{small:.0f} points, so "
            f"this run did move the encoder on intents; the caveats below still apply.")


def student_t_widening(n: int, confidence: float = 0.95) -> float:
    """How many times wider a Student-t interval with ``n`` values is than the normal one."""
    if n < 2:
        raise ValueError(f"need at least 2 values, got {n}")
    from scipy.stats import norm, t

    q = 0.5 + confidence / 2
    return float(t.ppf(q, n - 1) / norm.ppf(q))
