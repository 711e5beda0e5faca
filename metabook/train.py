"""Meta-training and evaluation loops shared by the book, the benchmarks and users.

``meta_train`` runs any learner whose loss is a function of a meta-batch;
``evaluate`` scores a predictor on episodes and reports the mean accuracy with
a 95% confidence interval, the way few-shot papers report it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from metabook.tasks import Episode

__all__ = ["mean_ci", "evaluate", "meta_train", "TrainLog", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The meta-loss became NaN or inf; raised with the step at which it happened."""


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation confidence interval.

    ``1.96 * std / sqrt(n)`` for 95%, with the sample standard deviation (ddof=1),
    as in Snell et al. and the ProtAugment protocol.  One value gives a 0 interval.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if v.size == 1:
        return float(v[0]), 0.0
    z = math.sqrt(2) * _erfinv(confidence)
    return float(v.mean()), float(z * v.std(ddof=1) / math.sqrt(v.size))


def _erfinv(y: float) -> float:
    return float(torch.erfinv(torch.tensor(y, dtype=torch.float64)))


@torch.no_grad()
def evaluate(predict: Callable[..., torch.Tensor], episodes: Iterable[Episode],
             device: torch.device | str | None = None, progress: bool = False) -> dict:
    """Accuracy of ``predict(support_x, support_y, query_x) -> labels`` over episodes.

    Returns ``{"mean": ..., "ci95": ..., "n": ..., "accuracies": [...]}`` with
    accuracies in percent.  Batched episodes count each task separately.
    """
    accs: list[float] = []
    for ep in tqdm(episodes, disable=not progress, desc="evaluate", leave=False):
        if device is not None:
            ep = ep.to(device)
        pred = predict(ep.support_x, ep.support_y, ep.query_x)
        correct = (pred == ep.query_y).double()
        if ep.batched:
            accs.extend((100 * correct.mean(-1)).tolist())
        else:
            accs.append(100 * correct.mean().item())
    mean, ci = mean_ci(accs)
    return {"mean": mean, "ci95": ci, "n": len(accs), "accuracies": accs}


@dataclass
class TrainLog:
    """Per-step meta-losses and wall time of a run."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    evals: list[tuple[int, float]] = field(default_factory=list)


def meta_train(loss_fn: Callable[[Episode], torch.Tensor], batches: Iterator[Episode],
               optimizer: torch.optim.Optimizer, steps: int, *,
               device: torch.device | str | None = None, clip_grad: float | None = None,
               eval_fn: Callable[[], float] | None = None, eval_every: int = 0,
               progress: bool = True) -> TrainLog:
    """Outer loop: ``steps`` optimizer steps on ``loss_fn(meta_batch)``.

    ``loss_fn`` maps a (stacked) episode to a scalar meta-loss, e.g.
    ``lambda ep: maml.meta_loss(*ep.tensors())``.  A NaN/inf loss stops training
    with :class:`NonFiniteLossError` naming the step; nothing is silently skipped.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    log, start = TrainLog(), time.perf_counter()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    bar = tqdm(range(steps), disable=not progress, desc="meta-train", leave=False)
    for step in bar:
        ep = next(batches)
        if device is not None:
            ep = ep.to(device)
        loss = loss_fn(ep)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"meta-loss is {loss.item()} at step {step}; lower the learning rates, "
                                     "or clip gradients (clip_grad=...)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        log.losses.append(loss.item())
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0:
            log.evals.append((step + 1, float(eval_fn())))
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
    log.seconds = time.perf_counter() - start
    return log
