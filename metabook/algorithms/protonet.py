"""Prototypical Networks (Snell, Swersky and Zemel, 2017).

Each class is represented by the mean embedding of its support examples (its
prototype); a query is scored by its negative distance to each prototype.
With squared Euclidean distance this is a linear classifier:
``-||f(x) - c_k||^2 = 2 c_k . f(x) - ||c_k||^2 - ||f(x)||^2``, and the last term
is the same for every class.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.base import Inputs, Learner, check_episode, encode_tasks

__all__ = ["ProtoNet", "prototypes"]


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int | None = None) -> torch.Tensor:
    """Class means of ``embeddings`` (``(..., M, D)``) for labels ``0..n_way-1`` (``(..., M)``).

    Works with or without a leading task dimension.  Every class must occur.
    """
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if embeddings.shape[:-1] != labels.shape:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} and labels {tuple(labels.shape)} "
                         "do not align: expected (..., M, D) and (..., M)")
    n_way = int(labels.max()) + 1 if n_way is None else n_way
    onehot = F.one_hot(labels.long(), n_way).to(embeddings.dtype)  # (..., M, N)
    counts = onehot.sum(-2)  # (..., N)
    if bool((counts == 0).any()):
        raise ValueError("a class has no support example; labels must cover 0..n_way-1")
    return (onehot.transpose(-1, -2) @ embeddings) / counts.unsqueeze(-1)


def _is_text(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], (list, tuple))


class ProtoNet(Learner):
    """Nearest-prototype classifier on top of an encoder.

    Args:
        encoder: maps inputs to embeddings ``(..., D)`` (called as ``encoder(x)``,
            or ``encoder(**x)`` for a mapping); ``None`` means the inputs already
            are embeddings (e.g. cached sentence embeddings).
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        scale: logit temperature for cosine similarity (ignored for Euclidean).
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.

    Inputs carry a leading task dimension: embeddings ``(B, M, D)``, token tensors
    or mappings ``(B, M, L)``; an encoder that takes sentences (e.g.
    :class:`~metabook.MiniLMEncoder`) also accepts B lists of sentences.
    """

    def __init__(self, encoder: nn.Module | Callable[[Any], torch.Tensor] | None = None,
                 distance: str = "euclidean", scale: float = 10.0, task_chunk: int | None = None) -> None:
        super().__init__(task_chunk)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.distance, self.scale = distance, float(scale)

    def check(self, support_x, support_y, query_x=None, query_y=None) -> int:
        if _is_text(support_x):  # B lists of sentences: check the counts against the labels
            for name, x, y in (("support", support_x, support_y), ("query", query_x, query_y)):
                if x is not None and y is not None and [len(t) for t in x] != [y.shape[-1]] * y.shape[0]:
                    raise ValueError(f"{name}_x has {[len(t) for t in x]} sentences per task but "
                                     f"{name}_y has shape {tuple(y.shape)}")
            return check_episode(torch.zeros(len(support_x), 1, 1), torch.zeros(len(support_x), 1))
        return super().check(support_x, support_y, query_x, query_y)

    def embed(self, x: Any) -> torch.Tensor:
        """Encode ``(B, M, ...)`` inputs (tasks flattened into one batch) to ``(B, M, D)``."""
        if isinstance(self.encoder, nn.Identity) and isinstance(x, torch.Tensor):
            return x
        return encode_tasks(self.encoder, x)

    def logits_from_embeddings(self, s_emb: torch.Tensor, s_y: torch.Tensor, q_emb: torch.Tensor,
                               n_way: int | None = None) -> torch.Tensor:
        """Query logits from support/query embeddings (optional leading task dim)."""
        protos = prototypes(s_emb, s_y, n_way)
        return self.logits_from_prototypes(protos, q_emb)

    def logits_from_prototypes(self, protos: torch.Tensor, q_emb: torch.Tensor) -> torch.Tensor:
        """Query logits ``(..., M_q, N)`` from prototypes ``(..., N, D)``."""
        if self.distance == "euclidean":
            return -torch.cdist(q_emb, protos).pow(2)
        return self.scale * F.normalize(q_emb, dim=-1) @ F.normalize(protos, dim=-1).transpose(-1, -2)

    def adapt(self, support_x: Inputs, support_y: torch.Tensor) -> torch.Tensor:
        """The prototypes of every task, ``(B, N, D)``."""
        self.check(support_x, support_y)
        return prototypes(self.embed(support_x), support_y)

    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Query logits ``(B, M_q, N)``."""
        self.check(support_x, support_y, query_x)
        return self.logits_from_embeddings(self.embed(support_x), support_y, self.embed(query_x))

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """Query cross-entropy of each task, ``(B,)``."""
        self.check(support_x, support_y, query_x, query_y)
        lg = self.logits(support_x, support_y, query_x)
        return F.cross_entropy(lg.transpose(1, 2), query_y, reduction="none").mean(1)

    def loss(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
             query_y: torch.Tensor) -> torch.Tensor:
        """Mean query cross-entropy over all tasks (the same as :meth:`~metabook.algorithms.base.Learner.meta_loss`)."""
        return self.meta_loss(support_x, support_y, query_x, query_y)

    @staticmethod
    def linear_classifier(s_emb: torch.Tensor, s_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``W = 2 c_k`` and biases ``b = -||c_k||^2`` of the equivalent linear layer."""
        c = prototypes(s_emb, s_y)
        return 2 * c, -(c * c).sum(-1)
