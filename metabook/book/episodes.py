"""Tables, figures and measured sentences for Chapters 2 (concepts) and 3 (algorithms).

The episode pictures themselves (sentence tables, PCA plots, the explorer widget) live in
:mod:`metabook.viz.episodes`, and the sinusoid adaptation tools in
:mod:`metabook.viz.adaptation`; this module holds what the two chapters build around them,
so that their cells show the method and not the layout:

* Chapter 2: :func:`subsample_per_class` (the CPU sample of an intent dataset),
  :func:`hardest_class_set` and :func:`class_confusion` (the most confusable test intents),
  :func:`plot_confusions`, :func:`first_episode_with_errors`, :func:`family_table`, and the
  sentences :func:`best_learner_sentence` and :func:`overfit_sentence`, built from the
  measured accuracies;
* Chapter 3: :func:`gaussian_clusters` (the synthetic workload of §3.3), :func:`sizes_table`,
  :func:`plot_adaptation_curves`, :func:`curve_table`, :func:`catch_up_step` and
  :func:`adaptation_summary` (adaptation from two initializations), and the benchmark of
  §3.3: :class:`BenchLearner`, :func:`adam_step`, :func:`reptile_step`, :func:`run_benchmark`,
  :func:`strengths_table`, :func:`ranking_sentence`, :func:`verdict_sentence`,
  :func:`comparison_sentence` and :func:`glue_values`.

An accuracy result is the ``dict`` that :func:`metabook.train.evaluate` returns
(``mean`` and ``ci95`` in percent). matplotlib is imported only inside the functions that
draw.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from metabook.algorithms.protonet import ProtoNet
from metabook.bench.memory import peak_memory_mib
from metabook.data.intents import IntentDataset
from metabook.tasks import Episode
from metabook.train import evaluate, mean_ci
from metabook.viz.episodes import nearest_prototype

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["mean_ci_text", "subsample_per_class", "HardSet", "hardest_class_set",
           "class_confusion", "plot_confusions", "first_episode_with_errors", "family_table",
           "best_learner_sentence", "overfit_sentence", "gaussian_clusters", "sizes_table",
           "plot_adaptation_curves", "curve_table", "catch_up_step", "adaptation_summary",
           "BenchLearner", "adam_step", "reptile_step", "BenchRow", "run_benchmark",
           "strengths_table", "ranking_sentence", "verdict_sentence", "comparison_sentence",
           "glue_values"]

#: Line colours of the two initializations in Chapter 3 (MAML, joint training).
CURVE_COLORS = ("#2c5aa0", "#d35400")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column, ``l`` or ``r``."""
    align = align or "l" * len(header)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_ci_text(result: Mapping[str, float], digits: int = 1) -> str:
    """``"84.4 ± 1.4"``: an :func:`~metabook.train.evaluate` result, mean ± 95% CI."""
    return f"{result['mean']:.{digits}f} ± {result['ci95']:.{digits}f}"


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ======================================================================================
# Chapter 2
def subsample_per_class(dataset: IntentDataset, per_class: int | None,
                        seed: int = 0) -> IntentDataset:
    """A copy of ``dataset`` with ``per_class`` random sentences of each class (``None``: all).

    The class splits and domains are kept, so episodes over the copy use the same classes.

    Raises:
        ValueError: a class has fewer than ``per_class`` sentences.
    """
    if per_class is None:
        return dataset
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for c, name in enumerate(dataset.class_names):
        idx = np.flatnonzero(dataset.label_ids == c)
        if len(idx) < per_class:
            raise ValueError(f"class {name!r} has {len(idx)} sentences, fewer than {per_class}")
        keep.append(rng.choice(idx, per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    return IntentDataset(f"{dataset.name}, {per_class} per class",
                         [dataset.texts[i] for i in keep], [dataset.labels[i] for i in keep],
                         {s: dataset.split(s) for s in dataset.splits()}, dataset.domain_of)


@dataclass
class HardSet:
    """The most similar set of classes found by :func:`hardest_class_set`.

    Attributes:
        classes: the class names, sorted.
        similarity: mean pairwise cosine similarity of their class means.
        overall: the same mean over all the classes searched.
    """

    classes: list[str]
    similarity: float
    overall: float


def _mean_offdiag(s: torch.Tensor) -> float:
    n = len(s)
    return ((s.sum() - s.diagonal().sum()) / (n * (n - 1))).item()


def hardest_class_set(embeddings: torch.Tensor, labels: Sequence[str], classes: Sequence[str],
                      size: int = 5) -> HardSet:
    """The ``size`` classes whose mean embeddings are most alike.

    Each class is taken with its ``size - 1`` nearest neighbours (cosine similarity of the
    class means); of these candidate sets, the one with the highest mean pairwise similarity
    wins.

    Args:
        embeddings: ``(n, D)``, one row per example.
        labels: the class of each row.
        classes: the classes to search (e.g. a split's test classes).
        size: classes per set (at least 2, at most ``len(classes)``).
    """
    if not 2 <= size <= len(classes):
        raise ValueError(f"size must be in 2..{len(classes)}, got {size}")
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(labels)} labels for {len(embeddings)} embeddings")
    labels = np.asarray(labels)
    means = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) == 0:
            raise ValueError(f"class {c!r} has no example")
        means.append(embeddings[torch.as_tensor(rows)].float().mean(0))
    means = torch.nn.functional.normalize(torch.stack(means), dim=1)
    sim = means @ means.T
    candidates = []
    for i in range(len(classes)):
        members = sim[i].argsort(descending=True)[:size]
        candidates.append((_mean_offdiag(sim[members][:, members]),
                           sorted(classes[j] for j in members.tolist())))
    best, names = max(candidates)
    return HardSet(names, best, _mean_offdiag(sim))


def class_confusion(predict: Callable[..., torch.Tensor], episodes: Iterable[Episode],
                    classes: Sequence[str]) -> np.ndarray:
    """Row-normalised confusion matrix (%) of ``predict`` over episodes of ``classes``.

    Rows are the true class, columns the predicted one, both in the order of ``classes``;
    each episode's labels are mapped back to class names through ``episode.classes``.

    Args:
        predict: ``predict(support_x, support_y, query_x) -> labels`` with a leading task
            dimension (e.g. :meth:`metabook.algorithms.base.Learner.predict`).
        episodes: unbatched episodes whose ``classes`` are all in ``classes``.
        classes: the class names, in the matrix's order.
    """
    n = len(classes)
    counts = np.zeros((n, n))
    for ep in episodes:
        order = [list(classes).index(c) for c in ep.classes]
        pred = predict(ep.support_x[None], ep.support_y[None], ep.query_x[None])[0]
        if pred.shape != ep.query_y.shape:
            raise ValueError(f"predict returned shape {tuple(pred.shape)} for "
                             f"{len(ep.query_y)} queries")
        for t, p in zip(ep.query_y.tolist(), pred.tolist()):
            counts[order[t], order[p]] += 1
    total = counts.sum(1, keepdims=True)
    if (total == 0).any():
        raise ValueError("some class has no query in the episodes")
    return 100 * counts / total


def plot_confusions(axes: Sequence["Axes"], confusions: Sequence[np.ndarray],
                    names: Sequence[str], titles: Sequence[str]) -> Any:
    """Draw confusion matrices (in %) side by side, with the value in each cell.

    Returns the last image, for a shared colour bar (``fig.colorbar(im, ax=axes)``).
    """
    short = [n.replace("_", " ") for n in names]
    im = None
    for ax, cm, title in zip(axes, confusions, titles):
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=100)
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=9,
                    color="white" if cm[i, j] > 60 else "black")
        ax.set_xticks(range(len(short)), short, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(short)), short, fontsize=8)
        ax.set_xlabel("predicted intent")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("true intent")
    return im


def first_episode_with_errors(sampler: Any, embeddings: Any, min_wrong: int = 2,
                              max_tries: int = 100) -> tuple[int, Episode, torch.Tensor]:
    """The first episode (by index) where the nearest prototype gets ``min_wrong`` queries wrong.

    Returns ``(index, episode, predictions)``; ``embeddings`` as in
    :func:`metabook.viz.episodes.episode_embeddings`.

    Raises:
        LookupError: none of the first ``max_tries`` episodes has that many errors.
    """
    for i in range(max_tries):
        ep = sampler.episode(i)
        _, pred = nearest_prototype(ep, embeddings)
        if int((pred != ep.query_y).sum()) >= min_wrong:
            return i, ep, pred
    raise LookupError(f"no episode among the first {max_tries} has {min_wrong} wrong queries")


def family_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The three-families table of Chapter 2.

    Each row has ``family``, ``learner``, ``training`` (text) and the
    :func:`~metabook.train.evaluate` results ``test`` and ``train``.
    """
    return _table(["family", "learner", "meta-training", "test classes", "train classes"],
                  [(r["family"], r["learner"], r["training"], mean_ci_text(r["test"]),
                    mean_ci_text(r["train"])) for r in rows], "lllrr")


def best_learner_sentence(test: Mapping[str, Mapping[str, float]], untrained: str) -> str:
    """Which learner is most accurate on the test classes, against the untrained one."""
    best = max(test, key=lambda k: test[k]["mean"])
    if best == untrained:
        return (f"**The most accurate learner on unseen intents is {untrained}, which was not "
                "meta-trained at all.**")
    return (f"**The most accurate learner on unseen intents is {best}**, ahead of "
            f"{untrained}, which was not meta-trained.")


def overfit_sentence(test: Mapping[str, Mapping[str, float]],
                     train: Mapping[str, Mapping[str, float]], baseline: str,
                     names: Mapping[str, str] | None = None) -> str:
    """Do the meta-trained learners score higher on their training classes than the baseline does?

    ``baseline`` (a learner that saw no training class, e.g. ProtoNet on a frozen encoder)
    measures how much easier one set of classes is than the other. A learner *fits its
    meta-training classes* when its train-minus-test difference exceeds the baseline's by
    more than the 95% margin of that difference of differences (the four half-widths added
    in quadrature; the four scores come from independent episodes).

    Args:
        test, train: learner -> :func:`~metabook.train.evaluate` result.
        baseline: the learner that measures the difficulty difference.
        names: how to write each learner in the sentence (default: its key).
    """
    names = dict(names or {})
    name = lambda k: names.get(k, k)  # noqa: E731
    # differences of the means as a table shows them (one decimal), so the sentence matches it
    gap = {k: round(train[k]["mean"], 1) - round(test[k]["mean"], 1) for k in test}
    trained = [k for k in test if k != baseline]
    if not trained:
        raise ValueError("need at least one learner besides the baseline")

    def margin(k: str) -> float:
        return math.sqrt(sum(r[x]["ci95"] ** 2 for r in (test, train) for x in (k, baseline)))

    fits = [k for k in trained if gap[k] - gap[baseline] > margin(k)]
    rest = [k for k in trained if k not in fits]
    first, *others = trained
    diffs = (f"{name(first)} scores {gap[first]:.1f} points more on train classes than on "
             "test classes")
    if others:
        diffs += ", " + _join([f"{name(k)} {gap[k]:.1f}" for k in others])
    numbers = (f"{diffs}, against {gap[baseline]:.1f} for {name(baseline)}, whose difference "
               "only measures how much harder one set of intents is than the other")
    if not rest:
        head = ("The meta-trained learner fits its" if len(fits) == 1 else
                ("Both" if len(fits) == 2 else "All") + " meta-trained learners fit their")
        return f"**{head} meta-training classes better than the test classes**: {numbers}."
    if not fits:
        return ("**No meta-trained learner fits its meta-training classes better than the test "
                f"classes by more than the 95% margin**: {numbers}.")
    verb = lambda ks: "fits" if len(ks) == 1 else "fit"  # noqa: E731
    who = _join([name(k) for k in fits])
    return (f"**{who[:1].upper() + who[1:]} {verb(fits)} the meta-training classes better "
            f"than the test classes; {_join([name(k) for k in rest])} "
            f"{'does' if len(rest) == 1 else 'do'} not, within the 95% margin**: {numbers}.")


# ======================================================================================
# Chapter 3
def gaussian_clusters(n_classes: int = 100, per_class: int = 40, dim: int = 32,
                      informative: int = 4, spread: float = 1.0,
                      noise: tuple[float, float] = (0.5, 1.5),
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic classes that differ only in a few directions: ``(x (n, dim), labels (n,))``.

    ``x = R (mu_y + eps)``: the class means ``mu_y`` are Gaussian with standard deviation
    ``spread`` in the first ``informative`` coordinates and zero elsewhere; the noise
    ``eps`` has standard deviation ``noise[0]`` in those coordinates and ``noise[1]`` in the
    others; ``R`` is a random rotation, so no coordinate of ``x`` is informative by itself.
    """
    if not 0 < informative <= dim:
        raise ValueError(f"informative must be in 1..{dim}, got {informative}")
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    means = torch.zeros(n_classes, dim)
    means[:, :informative] = spread * torch.randn(n_classes, informative, generator=g)
    std = torch.full((dim,), noise[1])
    std[:informative] = noise[0]
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    eps = torch.randn(len(labels), dim, generator=g)
    return (means[labels] + std * eps) @ rotation.T, labels


def sizes_table(sizes: Mapping[str, Any], meaning: Mapping[str, str]) -> str:
    """The chapter's sizes as a Markdown table: name, value here, meaning."""
    missing = set(sizes) - set(meaning)
    if missing:
        raise ValueError(f"no meaning given for {sorted(missing)}")
    return _table(["size", "here", "meaning"],
                  [(f"`{k}`", v, meaning[k]) for k, v in sizes.items()], "lrl")


def plot_adaptation_curves(ax: "Axes", curves: Mapping[str, np.ndarray], inner_lr: float,
                           k_shot: int) -> None:
    """Mean query MSE after ``0..S`` inner steps, with 95% bands, one line per initialization.

    ``curves`` maps a name to an array ``(tasks, S + 1)`` from
    :func:`metabook.viz.adaptation.adaptation_curve`.
    """
    n_tasks = None
    for (name, c), color in zip(curves.items(), CURVE_COLORS):
        x = np.arange(c.shape[1])
        mean, ci = np.array([mean_ci(c[:, s]) for s in x]).T
        ax.plot(x, mean, "o-", ms=4, color=color, label=name)
        ax.fill_between(x, mean - ci, mean + ci, color=color, alpha=0.2)
        n_tasks = len(c)
    ax.set(xlabel=f"inner SGD steps S on the support set (K = {k_shot}, α = {inner_lr})",
           ylabel="query MSE on a new task", yscale="log")
    ax.set_title(f"mean over {n_tasks} held-out sinusoid tasks, 95% CI", fontsize=10)
    ax.legend()


def curve_table(curves: Mapping[str, np.ndarray], shown: Sequence[int]) -> str:
    """Mean query MSE after the inner-step counts ``shown``, one row per initialization."""
    return _table(["mean query MSE after S steps"] + [f"S = {s}" for s in shown],
                  [[name] + [f"{c.mean(0)[s]:.3f}" for s in shown] for name, c in curves.items()],
                  "l" + "r" * len(shown))


def catch_up_step(slow: np.ndarray, fast: np.ndarray, after: int = 1) -> int | None:
    """The first step at which the mean of ``slow`` reaches ``fast``'s loss after ``after`` steps.

    Both are ``(tasks, S + 1)`` arrays of :func:`metabook.viz.adaptation.adaptation_curve`;
    ``None`` when ``slow`` never gets there within its ``S`` steps.
    """
    target = fast.mean(0)[after]
    return next((s for s, v in enumerate(slow.mean(0)) if v <= target), None)


def adaptation_summary(curves: Mapping[str, np.ndarray], fast: str, slow: str) -> str:
    """One sentence: how many steps ``slow`` needs to reach ``fast``'s loss after one step."""
    f, sl = curves[fast], curves[slow]
    steps = sl.shape[1] - 1
    one = f.mean(0)[1]
    s = catch_up_step(sl, f)
    if s is None:
        return (f"the {fast} reaches in one step a query loss ({one:.2f}) that {slow} does not "
                f"reach in {steps} (its loss after {steps} steps: {sl.mean(0)[steps]:.2f})")
    return (f"the {fast} reaches in one step a query loss ({one:.2f}) that {slow} needs "
            f"{s} steps to reach")


@dataclass
class BenchLearner:
    """One learner of the §3.3 benchmark.

    Attributes:
        family: ``"metric"``, ``"optimization"`` or ``"model"``.
        module: the learner (its parameters are what the step trains).
        step: one meta-training step on a batched episode.
        predict: ``predict(support_x, support_y, query_x) -> labels``, one per query.
    """

    family: str
    module: nn.Module
    step: Callable[[Episode], None]
    predict: Callable[..., torch.Tensor]


def adam_step(module: nn.Module, loss: Callable[..., torch.Tensor],
              lr: float = 3e-3) -> Callable[[Episode], None]:
    """A meta-step: ``loss(*episode.tensors())``, backward, one Adam step on ``module``."""
    opt = torch.optim.Adam(module.parameters(), lr)

    def step(ep: Episode) -> None:
        opt.zero_grad(set_to_none=True)
        loss(*ep.tensors()).backward()
        opt.step()
    return step


def reptile_step(reptile: Any) -> Callable[[Episode], None]:
    """A Reptile meta-step that adapts on all labelled points of each task (support + query)."""
    def step(ep: Episode) -> None:
        reptile.meta_step(torch.cat([ep.support_x, ep.query_x], 1),
                          torch.cat([ep.support_y, ep.query_y], 1))
    return step


@dataclass
class BenchRow:
    """One row of the §3.3 table.

    Attributes:
        method: the learner's name.
        family: its family (``"–"`` for the untrained floor).
        ms: median milliseconds per meta-step (``nan`` for the floor).
        mib: peak extra MiB of one meta-step (``nan`` for the floor).
        acc: mean held-out accuracy (%).
        ci: half-width of its 95% confidence interval.
    """

    method: str
    family: str
    ms: float
    mib: float
    acc: float
    ci: float

    @property
    def trained(self) -> bool:
        """Whether the row is a meta-trained learner (it has a time per step)."""
        return not math.isnan(self.ms)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(learners: Mapping[str, BenchLearner], train_batches: Sequence[Episode],
                  test_batches: Sequence[Episode], device: torch.device | str = "cpu",
                  floor: str | None = "raw-feature prototypes") -> list[BenchRow]:
    """Meta-train every learner on the same batches, then time, measure and score each.

    The learners take their steps in turn on each meta-batch (in reverse order on odd
    batches), so that all share whatever else the machine is doing; a learner's time is the
    median over its steps. After training each is scored with
    :func:`metabook.train.evaluate` on ``test_batches``, and one more step on the first
    training batch measures its peak memory (``metabook.bench.memory.peak_memory_mib``).

    Args:
        learners: name -> :class:`BenchLearner`.
        train_batches: one batched episode per meta-step.
        test_batches: held-out batched episodes.
        device: where the batches live (for CUDA timing and memory).
        floor: name of a first row with untrained nearest-prototype on the raw inputs
            (``None``: no such row).
    """
    device = torch.device(device)
    rows = []
    if floor is not None:
        raw = evaluate(ProtoNet().predict, test_batches)
        rows.append(BenchRow(floor, "–", math.nan, math.nan, raw["mean"], raw["ci95"]))
    names = list(learners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, ep in enumerate(train_batches):
        for name in names if i % 2 == 0 else names[::-1]:
            _sync(device)
            t = time.perf_counter()
            learners[name].step(ep)
            _sync(device)
            times[name].append(1e3 * (time.perf_counter() - t))
    for name in names:
        lrn = learners[name]
        res = evaluate(lrn.predict, test_batches)
        mib = peak_memory_mib(lambda: lrn.step(train_batches[0]), device)
        rows.append(BenchRow(name, lrn.family, statistics.median(times[name]), mib,
                             res["mean"], res["ci95"]))
    return rows


def strengths_table(rows: Sequence[BenchRow], pros_cons: Mapping[str, tuple[str, str]]) -> str:
    """The §3.3 table: time, memory, accuracy and a strength and a weakness per method."""
    num = lambda v, f: "–" if math.isnan(v) else format(v, f)  # noqa: E731
    return _table(
        ["method", "ms / step", "peak MiB", "accuracy (%)", "strength (+), weakness (−)"],
        [(r.method + ("" if r.family == "–" else f" ({r.family})"), num(r.ms, ".1f"),
          num(r.mib, ".2f"), f"{r.acc:.1f} ± {r.ci:.1f}",
          "+ {}<br>− {}".format(*pros_cons[r.method])) for r in rows], "lrrrl")


def ranking_sentence(rows: Sequence[BenchRow]) -> str:
    """The trained learners from most to least accurate, and how many beat the floor."""
    trained = sorted((r for r in rows if r.trained), key=lambda r: -r.acc)
    floor = [r for r in rows if not r.trained]
    text = "From most to least accurate: " + ", ".join(f"{r.method} ({r.acc:.1f}%)"
                                                        for r in trained)
    if floor:
        above = sum(r.acc - r.ci > floor[0].acc + floor[0].ci for r in trained)
        every = "all" if above == len(trained) else f"{above} of {len(trained)}"
        text += (f"; {every} above the {floor[0].method} floor of {floor[0].acc:.1f}% "
                 "(beyond both confidence intervals)")
    return text + "."


def verdict_sentence(rows: Sequence[BenchRow]) -> str:
    """Which trained learner was the most accurate, and which the cheapest per step."""
    trained = [r for r in rows if r.trained]
    best = max(trained, key=lambda r: r.acc).method
    fastest = min(trained, key=lambda r: r.ms).method
    if best == fastest:
        return f"{best} was both the most accurate learner and the cheapest per step"
    return f"{best} was the most accurate learner and {fastest} the cheapest per step"


def comparison_sentence(rows: Sequence[BenchRow], a: str, b: str) -> str:
    """``a`` against ``b`` in accuracy: below, above, or within the 95% margin of the difference."""
    by = {r.method: r for r in rows}
    ra, rb = by[a], by[b]
    diff, margin = ra.acc - rb.acc, math.hypot(ra.ci, rb.ci)
    if abs(diff) <= margin:
        return (f"{a} ({ra.acc:.1f}%) and {b} ({rb.acc:.1f}%) are within the 95% margin of "
                "each other")
    side = "below" if diff < 0 else "above"
    return f"{a} ({ra.acc:.1f}%) is {abs(diff):.1f} points {side} {b} ({rb.acc:.1f}%)"


def glue_values(rows: Sequence[BenchRow]) -> dict[str, float]:
    """``acc_<m>``, ``ci_<m>``, ``ms_<m>``, ``mib_<m>`` for each row, keyed for ``glue``.

    ``<m>`` is the method in lower case without ``-`` (``Meta-SGD`` -> ``metasgd``); the
    untrained floor is ``raw`` and has no time or memory.
    """
    out = {}
    for r in rows:
        key = "raw" if not r.trained else r.method.lower().replace("-", "")
        out[f"acc_{key}"], out[f"ci_{key}"] = r.acc, r.ci
        if r.trained:
            out[f"ms_{key}"], out[f"mib_{key}"] = r.ms, r.mib
    return out
