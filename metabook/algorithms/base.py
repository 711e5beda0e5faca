"""The learner protocol that every meta-learner implements, and its input checks.

A *learner* wraps a model and turns a meta-batch of episodes into something the
one trainer (:mod:`metabook.train`) can optimise.  All eight learners
(:class:`~metabook.ProtoNet`, :class:`~metabook.MAML` with FOMAML, :class:`~metabook.ANIL`,
:class:`~metabook.MetaSGD`, :class:`~metabook.Leopard`, :class:`~metabook.Reptile`,
:class:`~metabook.InContextLearner`) subclass :class:`Learner`, and so do the two non-meta
controls (:class:`~metabook.MaskedLMControl`, :class:`~metabook.SimCSEControl`) that the trainer
runs on the same tasks.  They provide:

* ``task_losses(support_x, support_y, query_x, query_y) -> (B,)`` -- the outer
  objective of each task, differentiable w.r.t. the learner's parameters.  Its
  gradient is the meta-update (for Reptile a surrogate whose gradient is
  ``theta - phi``);
* ``meta_loss(...)`` -- their mean;
* ``outer_backward(..., scale)`` -- accumulate ``scale * sum_i grad loss_i`` into
  ``.grad``, ``task_chunk`` tasks at a time, and return the detached losses;
* ``adapt(support_x, support_y)`` -- the task-specific state (fast weights,
  prototypes, a context) for every task;
* ``logits(support_x, support_y, query_x) -> (B, M_q, C)`` and
  ``predict(...) -> (B, M_q)`` -- with no second-order graph.

Inputs: ``x`` is a tensor ``(B, M, *features)`` or a mapping of such tensors
(``input_ids``, ``attention_mask``, ...; a mapping goes to the model as
``model(**x)``), and ``y`` is ``(B, M, ...)``.  ``B`` is the task dimension and
is never optional: an unbatched episode raises a :class:`ValueError` naming the
tensor.  A model output with a ``.logits`` attribute is read from there.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import torch
from torch import nn

__all__ = ["Learner", "Inputs", "check_episode", "num_tasks", "take_tasks", "call_model", "output_logits",
           "encode_tasks"]

#: A tensor ``(B, M, ...)`` or a mapping of such tensors.
Inputs = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def output_logits(out: Any) -> torch.Tensor:
    """``out.logits`` for a Hugging Face ``ModelOutput`` (or anything with ``.logits``), else ``out``."""
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    return out


def call_model(fn: Callable, x: Any) -> torch.Tensor:
    """``fn(**x)`` for a mapping, ``fn(x)`` otherwise; the result's ``.logits`` if it has them."""
    return output_logits(fn(**x) if isinstance(x, Mapping) else fn(x))


def _shape_of(name: str, x: Any, min_dim: int) -> tuple[int, ...]:
    """Leading ``(B, M)`` of a tensor or of every tensor of a mapping; refuse anything else."""
    if isinstance(x, torch.Tensor):
        items = [(name, x)]
    elif isinstance(x, Mapping):
        if not x:
            raise ValueError(f"{name} is an empty mapping")
        items = []
        for k, v in x.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"{name}[{k!r}] must be a tensor, got {type(v).__name__}")
            items.append((f"{name}[{k!r}]", v))
    else:
        raise TypeError(f"{name} must be a tensor or a mapping of tensors, got {type(x).__name__} "
                        "(tokenize text first, e.g. with metabook.TextCollator)")
    lead = None
    for label, t in items:
        if t.dim() < min_dim:
            raise ValueError(
                f"{label} has shape {tuple(t.shape)}: expected a leading task dimension, "
                f"(B, M{', ...' if min_dim > 2 else ''}) with at least {min_dim} dims. For one "
                "episode add it with .unsqueeze(0) (or use EpisodeSampler.batch)")
        if lead is None:
            lead = tuple(t.shape[:2])
        elif tuple(t.shape[:2]) != lead:
            raise ValueError(f"{label} has shape {tuple(t.shape)}, but the other tensors of {name} "
                             f"start with {lead}")
    return lead


def check_episode(support_x: Any, support_y: torch.Tensor, query_x: Any = None,
                  query_y: torch.Tensor | None = None, *, x_dims: int = 3) -> int:
    """Validate a meta-batch and return its number of tasks ``B``.

    ``x`` must have at least ``x_dims`` dimensions ``(B, M, features...)`` (every
    tensor of a mapping at least 2, ``(B, M, ...)`` -- token ids are ``(B, M, L)``);
    ``y`` at least 2, ``(B, M)``.  ``x`` and ``y`` of the same set must agree on
    ``(B, M)``, and all four on ``B``.  Errors name the tensor.
    """
    sx = _shape_of("support_x", support_x, x_dims if isinstance(support_x, torch.Tensor) else 2)
    sy = _shape_of("support_y", support_y, 2)
    if sx != sy:
        raise ValueError(f"support_x starts with (B, M) = {sx} but support_y with {sy}")
    b = sx[0]
    if query_x is not None:
        qx = _shape_of("query_x", query_x, x_dims if isinstance(query_x, torch.Tensor) else 2)
        if qx[0] != b:
            raise ValueError(f"query_x has {qx[0]} tasks but support_x has {b}")
        if query_y is not None:
            qy = _shape_of("query_y", query_y, 2)
            if qx != qy:
                raise ValueError(f"query_x starts with (B, M) = {qx} but query_y with {qy}")
    if b == 0:
        raise ValueError("the meta-batch has no tasks (B = 0)")
    return b


def num_tasks(x: Inputs) -> int:
    """``B`` of a tensor or mapping with a leading task dimension."""
    return int(next(iter(x.values())).shape[0]) if isinstance(x, Mapping) else int(x.shape[0])


def take_tasks(x: Inputs, lo: int, hi: int) -> Inputs:
    """Tasks ``lo:hi`` of a tensor or a mapping of tensors."""
    if isinstance(x, Mapping):
        return {k: v[lo:hi] for k, v in x.items()}
    return x[lo:hi]


def encode_tasks(encoder: Callable, x: Any) -> torch.Tensor:
    """Embed ``(B, M, ...)`` inputs with ``encoder`` (tasks and examples flattened into one
    batch) to ``(B, M, D)``; B lists of sentences are encoded task by task."""
    if isinstance(x, (list, tuple)):
        return torch.stack([encoder(list(xi)) for xi in x])
    b = num_tasks(x)
    flat = {k: v.flatten(0, 1) for k, v in x.items()} if isinstance(x, Mapping) else x.flatten(0, 1)
    return call_model(encoder, flat).unflatten(0, (b, -1))


class Learner(nn.Module):
    """Base class of the meta-learners: one interface for the trainer.

    Subclasses implement :meth:`task_losses`, :meth:`adapt` and :meth:`logits`.

    Args:
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`; ``None`` processes
            the whole meta-batch at once.  Chunking gives the same gradients with
            a peak memory of one chunk's graph.
    """

    #: Minimum number of dimensions of a tensor ``x``: ``(B, M, features)``.
    x_dims = 3

    def __init__(self, task_chunk: int | None = None) -> None:
        super().__init__()
        if task_chunk is not None and (isinstance(task_chunk, bool) or not isinstance(task_chunk, int)
                                       or task_chunk < 1):
            raise ValueError(f"task_chunk must be None or an int >= 1, got {task_chunk!r}")
        self.task_chunk = task_chunk

    def check(self, support_x: Any, support_y: torch.Tensor, query_x: Any = None,
              query_y: torch.Tensor | None = None) -> int:
        """:func:`~metabook.algorithms.base.check_episode` with this learner's ``x_dims``; returns ``B``."""
        return check_episode(support_x, support_y, query_x, query_y, x_dims=self.x_dims)

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """Outer objective of each task, ``(B,)``, differentiable w.r.t. the parameters."""
        raise NotImplementedError

    def meta_loss(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                  query_y: torch.Tensor) -> torch.Tensor:
        """Mean outer objective over the meta-batch (a scalar with a graph)."""
        return self.task_losses(support_x, support_y, query_x, query_y).mean()

    def outer_backward(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                       query_y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Accumulate ``d(scale * sum_i loss_i)/d params`` into ``.grad``; return the losses ``(B,)``.

        With ``task_chunk`` set, ``task_chunk`` tasks are processed and
        back-propagated at a time, so only one chunk's graph is alive.  A
        non-finite loss is returned as is (its chunk is not back-propagated);
        the caller decides what to do.
        """
        b = self.check(support_x, support_y, query_x, query_y)
        chunk = self.task_chunk or b
        out = []
        for lo in range(0, b, chunk):
            hi = min(b, lo + chunk)
            losses = self.task_losses(take_tasks(support_x, lo, hi), support_y[lo:hi],
                                      take_tasks(query_x, lo, hi), query_y[lo:hi])
            if bool(torch.isfinite(losses.detach()).all()):
                (losses.sum() * scale).backward()
            out.append(losses.detach())
        return torch.cat(out)

    def adapt(self, support_x: Inputs, support_y: torch.Tensor) -> Any:
        """The task-specific state of every task (fast weights, prototypes, context)."""
        raise NotImplementedError

    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Query outputs ``(B, M_q, ...)`` after adaptation (logits for classification)."""
        raise NotImplementedError

    def outputs(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Alias of :meth:`logits`, the natural name for regression outputs."""
        return self.logits(support_x, support_y, query_x)

    @torch.no_grad()
    def predict(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Predicted query labels ``(B, M_q)``: ``logits(...).argmax(-1)``."""
        return self.logits(support_x, support_y, query_x).argmax(-1)
