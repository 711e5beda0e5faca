"""Helpers for Chapter 4 (the mathematics): flat parameter vectors, formula checks, curvature.

The chapter derives each formula in its own cells and checks it there; this module holds the
plumbing around the derivations, so that the cells show only the mathematics:

* :class:`FlatView`, :func:`grad_vector` and :func:`finite_differences` present a module's
  parameters as one vector :math:`\\theta`, so that a Hessian is an ordinary matrix;
* :class:`FormulaChecks` records every numerical check (relative error against a tolerance)
  and tabulates them;
* :func:`train_maml_and_joint` trains, deterministically, the two sinusoid models of
  Chapter 3's comparison (a MAML initialisation and joint training), and
  :func:`support_spectrum`, :func:`alpha_r` and :func:`fo_cosine` measure their curvature;
* :func:`count_features`, :func:`tfidf_features` and :func:`sentence_features` embed the
  sentences of an episode;
* :func:`saved_tensor_bytes` and :func:`maml_memory` measure the memory that MAML's autograd
  graph holds, against the number of inner steps;
* ``plot_*`` draw the chapter's figures on a given matplotlib ``Axes``.

matplotlib is imported only inside the functions that draw.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, vmap

from metabook.algorithms.maml import MAML
from metabook.data.sinusoid import SinusoidTasks
from metabook.device import seed_everything
from metabook.models import sinusoid_mlp
from metabook.tasks import Episode
from metabook.train import TrainLog, meta_train
from metabook.viz.adaptation import train_joint_baseline

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["FlatView", "grad_vector", "finite_differences", "FormulaChecks", "markdown_table",
           "halving_ratios", "plot_fo_error", "Adapted", "compare_adaptations",
           "SINUSOID_PAIR_SIZES", "SinusoidPair", "train_maml_and_joint",
           "support_spectrum", "alpha_r", "fo_cosine", "plot_curvature", "plot_factor_track",
           "plot_cosines", "count_features", "tfidf_features", "sentence_features",
           "saved_tensor_bytes", "maml_memory", "linear_fit"]

#: Colours of the three initialisations in the figures (random, joint training, MAML).
INIT_COLORS = ("0.6", "#e67e22", "#2c5aa0")


# --------------------------------------------------------------------------------------
# parameters as one vector
class FlatView:
    """A module's parameters as one flat vector ``theta`` (so that a Hessian is a matrix).

    Args:
        model: any module; its parameters are laid out in ``named_parameters()`` order.
        loss_fn: the loss of :meth:`loss`, called as ``loss_fn(prediction, target)``.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[..., torch.Tensor] = F.mse_loss):
        self.model, self.loss_fn = model, loss_fn
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]

    def vector(self, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """A dict of tensors (default: the module's own parameters) as one flat vector."""
        params = dict(self.model.named_parameters()) if params is None else params
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflat(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat vector ``v`` as a dict of tensors, named and shaped like the parameters."""
        if v.numel() != sum(self.sizes):
            raise ValueError(f"expected a vector of {sum(self.sizes)} numbers, got {v.numel()}")
        parts = v.split(self.sizes)
        return {n: t.reshape(s) for n, t, s in zip(self.names, parts, self.shapes)}

    def loss(self, v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the parameter vector ``v`` on the set ``(x, y)``."""
        return self.loss_fn(functional_call(self.model, self.unflat(v), (x,)), y)


def grad_vector(scalar: torch.Tensor, params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``d scalar / d params`` from autograd, flattened into one vector."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(scalar, list(params))])


def finite_differences(f: Callable[[], torch.Tensor], module: nn.Module,
                       eps: float = 1e-6) -> torch.Tensor:
    """Central differences of ``f()`` in each coordinate of ``module``'s parameter vector.

    ``f`` reads the module's parameters (e.g. ``lambda: maml.meta_loss(...)``); each
    coordinate is moved by ``±eps`` in turn, and the parameters are restored at the end.
    """
    theta = nn.utils.parameters_to_vector(module.parameters()).detach().clone()
    out = torch.empty_like(theta)
    try:
        with torch.no_grad():
            for i in range(theta.numel()):
                e = torch.zeros_like(theta)
                e[i] = eps
                nn.utils.vector_to_parameters(theta + e, module.parameters())
                up = f().item()
                nn.utils.vector_to_parameters(theta - e, module.parameters())
                out[i] = (up - f().item()) / (2 * eps)
    finally:
        nn.utils.vector_to_parameters(theta, module.parameters())
    return out


@dataclass
class Adapted:
    """What one adaptation map did to one task (§4.1's table)."""

    name: str
    phi: dict[str, torch.Tensor]
    changed: int
    tensors: int
    distance: float
    loss_before: float
    loss_after: float


def compare_adaptations(learners: Mapping[str, Any], model: nn.Module, task: Episode,
                        loss_fn: Callable[..., torch.Tensor] = F.mse_loss) -> list[Adapted]:
    """Adapt ``model`` to the first task of ``task`` with each gradient-based learner.

    Each learner's ``adapt(support_x, support_y)`` gives the fast weights ``phi``; the
    result records how many tensors changed, ``||phi - theta||`` and the query loss before
    and after.
    """
    theta = _detached(model)
    qx, qy = task.query_x[0], task.query_y[0]

    def query_loss(params: Mapping[str, torch.Tensor]) -> float:
        with torch.no_grad():
            return loss_fn(functional_call(model, dict(params), (qx,)), qy).item()

    out = []
    for name, learner in learners.items():
        fast = learner.adapt(task.support_x[:1], task.support_y[:1])
        phi = {n: p[0].detach() for n, p in fast.items()}
        changed = sum(not torch.equal(phi[n], theta[n]) for n in theta)
        dist = math.sqrt(sum(((phi[n] - theta[n]) ** 2).sum().item() for n in theta))
        out.append(Adapted(name, phi, changed, len(theta), dist, query_loss(theta),
                           query_loss(phi)))
    return out


# --------------------------------------------------------------------------------------
# recording the checks
@dataclass
class FormulaChecks:
    """Every numerical check of a chapter: formula, comparison, relative error, tolerance."""

    rows: list[tuple[str, str, float, float]] = field(default_factory=list)
    verbose: bool = True

    def add(self, formula: str, what: str, error: float, tol: float) -> None:
        """Record an error computed elsewhere; raise ``AssertionError`` unless ``error < tol``."""
        error = float(error)
        self.rows.append((formula, what.strip(), error, tol))
        if self.verbose:
            print(f"{what:<52s} relative error {error:8.1e}   (tolerance {tol:.0e})")
        if not error < tol:  # also catches NaN
            raise AssertionError(f"{formula} {what.strip()}: relative error {error:.2e} "
                                 f"is not below {tol:.0e}")

    def compare(self, formula: str, what: str, got: torch.Tensor, want: torch.Tensor,
                tol: float) -> None:
        """Check ``||got - want|| / ||want|| < tol`` and record it (see :attr:`last`)."""
        if got.shape != want.shape:
            raise AssertionError(f"{formula} {what.strip()}: shapes {tuple(got.shape)} "
                                 f"and {tuple(want.shape)} differ")
        self.add(formula, what, ((got - want).norm() / want.norm()).item(), tol)

    @property
    def last(self) -> float:
        """The error of the most recent check."""
        if not self.rows:
            raise IndexError("no check recorded yet")
        return self.rows[-1][2]

    def __len__(self) -> int:
        return len(self.rows)

    def worst(self) -> float:
        """The largest error relative to its tolerance (below 1 when every check passed)."""
        return max((math.inf if math.isnan(e) else e / t for _, _, e, t in self.rows),
                   default=0.0)

    def table(self) -> str:
        """All checks as a Markdown table (show it with ``IPython.display.Markdown``)."""
        return markdown_table(["formula", "comparison", "relative error", "tolerance"],
                              [[f, w.replace("|", "&#124;"), f"{e:.1e}", f"{t:.0e}"]
                               for f, w, e, t in self.rows], align="llrr")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """The source of a Markdown table; ``align`` gives one letter per column, ``l`` or ``r``.

    Show it with ``display(Markdown(markdown_table(...)))``.
    """
    header = list(header)
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} letters for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def halving_ratios(errors: Sequence[float]) -> list[float]:
    """``errors[i-1] / errors[i]``: how much an error falls each time the step size halves."""
    return [p / e for p, e in zip(errors[:-1], errors[1:])]


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through ``(x, y)``: ``(slope, intercept, largest relative residual)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = np.abs(y - (slope * x + intercept)) / np.abs(y).clip(1e-300)
    return float(slope), float(intercept), float(resid.max())


def plot_fo_error(ax: "Axes", alphas: np.ndarray, errors: np.ndarray, bounds: np.ndarray,
                  slope: float, intercept: float) -> None:
    """§4.2.2: the norm of FOMAML's dropped term, its bound and the fitted line, log-log."""
    ax.loglog(alphas, errors, "o-", color="#2c5aa0",
              label=r"$\Vert g_{\mathrm{MAML}} - g_{\mathrm{FO}}\Vert$ (autograd)")
    ax.loglog(alphas, bounds, "--", color="#e67e22",
              label=r"bound $\alpha\Vert H_{\mathrm{s}}\Vert_2\Vert\nabla\mathcal{L}_{\mathrm{q}}(\phi)\Vert$")
    ax.loglog(alphas, np.exp(intercept) * alphas ** slope, ":", color="0.4",
              label=f"fitted slope {slope:.2f}")
    ax.set(xlabel=r"inner step size $\alpha$", ylabel="norm of the dropped term",
           title="FOMAML's error is first order in α")
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------------------
# §4.3.1: the two sinusoid models and their curvature
#: The sizes of Chapter 3's comparison, for :func:`metabook.device.by_device` (outer steps,
#: tasks per meta-batch and Adam step size, on a CPU and on a GPU).
SINUSOID_PAIR_SIZES = dict(cpu=dict(steps=1000, batch_size=10, lr=1e-2),
                           gpu=dict(steps=10_000, batch_size=25, lr=3e-3))


@dataclass
class SinusoidPair:
    """The two trained sinusoid networks of the MAML-against-joint-training comparison."""

    maml: nn.Module
    joint: nn.Module
    log_maml: TrainLog
    log_joint: TrainLog


def train_maml_and_joint(steps: int, batch_size: int, lr: float, *, inner_lr: float = 0.01,
                         k_shot: int = 10, seed: int = 0,
                         device: torch.device | str = "cpu",
                         eval_fn: Callable[[nn.Module], float] | None = None,
                         eval_every: int = 0) -> SinusoidPair:
    """Train a MAML initialisation and a joint-training baseline on sinusoids, deterministically.

    The recipe of Chapter 3's comparison: both 1-40-40-1 networks start from the same
    seeded initialisation and see the same meta-batches (``SinusoidTasks(seed=0)``, ``k_shot``
    support and query points per task). MAML takes one inner step of size ``inner_lr``;
    the baseline (:func:`metabook.viz.adaptation.train_joint_baseline`) fits all the
    points of each meta-batch with no inner loop. Both use Adam with step size ``lr``.

    Args:
        steps: outer steps of each run.
        batch_size: tasks per meta-batch (:math:`B`).
        lr: Adam step size (:math:`\\beta`).
        inner_lr: MAML's inner step size (:math:`\\alpha`).
        k_shot: support (and query) points per task.
        seed: seeds the initialisation.
        device: where to train.
        eval_fn: called as ``eval_fn(maml_model)`` before the first step and every
            ``eval_every`` steps of the MAML run (``meta_train``'s evaluation hook); use
            it to track a quantity during meta-training. It returns a float, which
            ``log_maml.evals`` records as ``(step, value)``, the first call as step 0.
        eval_every: steps between calls of ``eval_fn``.
    """
    tasks = SinusoidTasks(seed=0)

    def batches() -> Iterator[Episode]:
        i = 0
        while True:
            yield tasks.batch(batch_size, k_shot, k_shot, index=i, device=device)
            i += 1

    seed_everything(seed)
    maml_net = sinusoid_mlp().to(device)
    maml = MAML(maml_net, inner_lr=inner_lr, inner_steps=1, loss_fn=F.mse_loss)
    hook, start = None, None
    if eval_fn is not None:
        start = float(eval_fn(maml_net))  # the starting point
        hook = lambda: eval_fn(maml_net)  # noqa: E731
    log_maml = meta_train(lambda ep: maml.meta_loss(*ep.tensors()), batches(),
                          torch.optim.Adam(maml_net.parameters(), lr), steps,
                          eval_fn=hook, eval_every=eval_every if hook else 0, progress=False)
    if start is not None:
        log_maml.evals.insert(0, (0, start))
    seed_everything(seed)
    joint_net = sinusoid_mlp().to(device)
    log_joint = train_joint_baseline(joint_net, tasks, steps, lr=lr, batch_size=batch_size,
                                     k_shot=k_shot, n_query=k_shot)
    return SinusoidPair(maml_net, joint_net, log_maml, log_joint)


def _detached(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def support_spectrum(model: nn.Module, probe: Episode) -> torch.Tensor:
    """Eigenvalues (ascending, float64, on the CPU) of the support-loss Hessian of the first
    task of ``probe`` at the model's parameters."""
    view, x, y = FlatView(model), probe.support_x[0], probe.support_y[0]
    H = hessian(lambda v: view.loss(v, x, y))(view.vector().detach())
    return torch.linalg.eigvalsh(H.double().cpu())


def alpha_r(model: nn.Module, episodes: Episode, alpha: float) -> np.ndarray:
    """``alpha * g^T H g / ||g||^2`` for each task, ``g`` and ``H`` its support gradient and
    Hessian at the model's parameters (one Hessian-vector product per task, vmapped).

    ``alpha * r = 1`` means that the step ``alpha`` is the best step along ``g`` on the
    quadratic model of the support loss.
    """
    params = _detached(model)

    def dot(u: Mapping[str, torch.Tensor], v: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum((u[n] * v[n]).sum() for n in u)

    def one(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = lambda p: F.mse_loss(functional_call(model, p, (x,)), y)  # noqa: E731
        g = grad(loss)(params)
        Hg = grad(lambda p: dot(grad(loss)(p), g))(params)  # d/dp (grad L(p) . g) = H g
        return dot(g, Hg) / dot(g, g)

    return (alpha * vmap(one)(episodes.support_x, episodes.support_y)).detach().cpu().numpy()


def fo_cosine(model: nn.Module, episodes: Episode, alpha: float, inner_steps: int = 1) -> float:
    """Cosine between MAML's exact meta-gradient and FOMAML's on ``episodes``."""
    g = []
    for first_order in (False, True):
        learner = MAML(model, alpha, inner_steps, first_order=first_order, loss_fn=F.mse_loss)
        g.append(grad_vector(learner.meta_loss(*episodes.tensors()), model.parameters()))
    return F.cosine_similarity(g[0], g[1], dim=0).item()


def plot_curvature(ax: "Axes", values: Mapping[str, np.ndarray]) -> None:
    """Histograms of ``alpha * r`` per task, one per initialisation, with a line at 1."""
    top = max(2.0, max(float(v.max()) for v in values.values()))
    bins = np.linspace(0, top, 30)
    for (name, v), color in zip(values.items(), INIT_COLORS):
        ax.hist(v, bins=bins, alpha=0.55, color=color, label=f"{name} (median {np.median(v):.2f})")
    ax.axvline(1, color="k", ls="--", lw=1)
    ax.set(xlabel=r"$\alpha\, g^\top H_{\mathrm{s}} g / \Vert g\Vert^2$ for each held-out task",
           ylabel="tasks", title="curvature along each task's gradient")
    ax.legend(fontsize=8)


def plot_factor_track(ax: "Axes", steps: Sequence[int], lam_min: np.ndarray,
                      lam_max: np.ndarray, ar_median: np.ndarray, alpha: float) -> None:
    """The factor ``I - alpha H_s`` along meta-training: its eigenvalue range and norm for one
    task, and the median of ``1 - alpha r`` over the held-out tasks."""
    lam_min, lam_max = np.asarray(lam_min), np.asarray(lam_max)
    norm = np.maximum(np.abs(1 - alpha * lam_min), np.abs(1 - alpha * lam_max))
    ax.fill_between(steps, 1 - alpha * lam_max, 1 - alpha * lam_min, color="#2c5aa0",
                    alpha=0.2, label=r"eigenvalues of $I-\alpha H_{\mathrm{s}}$ (one task)")
    ax.plot(steps, norm, "o-", color="#2c5aa0",
            label=r"$\Vert I-\alpha H_{\mathrm{s}}\Vert_2$ (one task)")
    ax.plot(steps, 1 - np.asarray(ar_median), "D-", color="#c0392b",
            label=r"$1-\alpha r$ along the gradient (median of the held-out tasks)")
    ax.axhline(0, color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="meta-training step", title=r"the factor $I-\alpha H_{\mathrm{s}}$ along the run")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def plot_cosines(ax: "Axes", cosines: Mapping[str, float], inner_steps: int = 1) -> None:
    """Bars of the cosine between MAML's and FOMAML's meta-gradients, per initialisation."""
    names, values = list(cosines), list(cosines.values())
    ax.bar(names, values, color=list(INIT_COLORS[:len(names)]))
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=9)
    ax.set(ylim=(min(0.0, min(values) - 0.05), 1.08),
           title=rf"cos($g_{{\mathrm{{MAML}}}}$, $g_{{\mathrm{{FO}}}}$), $S$ = {inner_steps}")
    ax.tick_params(axis="x", labelsize=8)


# --------------------------------------------------------------------------------------
# §4.3.2 and §4.4: features of an episode's sentences
def _tokens(texts: Sequence[str]) -> tuple[list[list[str]], dict[str, int]]:
    docs = [re.findall(r"[a-z']+", t.lower()) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    return docs, vocab


def count_features(texts: Sequence[str]) -> torch.Tensor:
    """Raw bag-of-words counts, float64 and unnormalised: longer sentences give longer vectors.

    The vocabulary is the lower-cased words of ``texts`` themselves, in sorted order.
    """
    docs, vocab = _tokens(texts)
    x = torch.zeros(len(docs), len(vocab), dtype=torch.float64)
    for r, d in enumerate(docs):
        for w, n in Counter(d).items():
            x[r, vocab[w]] = n
    return x


def tfidf_features(texts: Sequence[str]) -> torch.Tensor:
    """TF-IDF bag-of-words vectors of unit length (float64); vocabulary and IDF from ``texts``."""
    tf = count_features(texts)
    n = len(texts)
    idf = torch.log(torch.tensor((1.0 + n)) / (1 + (tf > 0).sum(0))) + 1
    return F.normalize(tf * idf, dim=1)


def sentence_features(texts: Sequence[str]) -> tuple[torch.Tensor, str]:
    """``(features (n, d) float64, description)``: frozen MiniLM embeddings when the encoder is
    installed, otherwise :func:`tfidf_features` (with a printed note)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        from metabook.encoders import MiniLMEncoder

        features = MiniLMEncoder().encode(list(texts)).double()
        return features, "all-MiniLM-L6-v2 (frozen, mean-pooled, unit length)"
    except Exception as err:  # no encoder package or weights: a fixed bag-of-words map
        print(f"MiniLM unavailable ({type(err).__name__}); using TF-IDF bag-of-words features")
        return tfidf_features(texts), "TF-IDF bag of words"


# --------------------------------------------------------------------------------------
# §4.4: memory against inner steps
def saved_tensor_bytes(loss: torch.Tensor) -> int:
    """Bytes of the distinct tensors that the autograd graph behind ``loss`` saves for backward.

    Walks the graph from ``loss.grad_fn`` and reads each node's ``_saved_*`` attributes;
    tensors that share storage are counted once.
    """
    seen, storages, total, stack = set(), set(), 0, [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except RuntimeError:  # freed, or not a tensor
                continue
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    if storage.data_ptr() not in storages:  # shared storage counts once
                        storages.add(storage.data_ptr())
                        total += storage.nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return total


def maml_memory(model: nn.Module, batch: Episode, inner_steps: Sequence[int] = (1, 2, 4, 8),
                inner_lr: float = 0.01, repeats: int = 3
                ) -> dict[tuple[int, bool], tuple[int, float]]:
    """Graph memory and time of one MAML meta-step, second and first order, per inner-step count.

    Returns ``{(S, first_order): (bytes saved for backward, fastest seconds of forward plus
    backward over ``repeats`` runs)}``.
    """
    out = {}
    for S in inner_steps:
        for first_order in (False, True):
            learner = MAML(model, inner_lr, S, first_order=first_order, loss_fn=F.mse_loss)
            nbytes = saved_tensor_bytes(learner.meta_loss(*batch.tensors()))
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                learner.meta_loss(*batch.tensors()).backward()
                times.append(time.perf_counter() - t)
            model.zero_grad(set_to_none=True)
            out[S, first_order] = (nbytes, min(times))
    return out
