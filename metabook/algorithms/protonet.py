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

__all__ = ["ProtoNet", "prototypes"]


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int | None = None) -> torch.Tensor:
    """Class means of ``embeddings`` (``(..., M, D)``) for labels ``0..n_way-1`` (``(..., M)``).

    Works with or without a leading task dimension.  Every class must occur.
    """
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    n_way = int(labels.max()) + 1 if n_way is None else n_way
    onehot = F.one_hot(labels.long(), n_way).to(embeddings.dtype)  # (..., M, N)
    counts = onehot.sum(-2)  # (..., N)
    if bool((counts == 0).any()):
        raise ValueError("a class has no support example; labels must cover 0..n_way-1")
    return (onehot.transpose(-1, -2) @ embeddings) / counts.unsqueeze(-1)


class ProtoNet(nn.Module):
    """Nearest-prototype classifier on top of an encoder.

    Args:
        encoder: maps inputs to embeddings ``(..., D)``; ``None`` means the inputs
            already are embeddings (e.g. cached sentence embeddings).
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        scale: logit temperature for cosine similarity (ignored for Euclidean).
    """

    def __init__(self, encoder: nn.Module | Callable[[Any], torch.Tensor] | None = None,
                 distance: str = "euclidean", scale: float = 10.0) -> None:
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.distance, self.scale = distance, float(scale)

    def embed(self, x: Any) -> torch.Tensor:
        """Encode inputs; a list of per-task inputs (e.g. sentences) is encoded task by task."""
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple)):
            return torch.stack([self.encoder(xi) for xi in x])
        return self.encoder(x)

    def logits_from_embeddings(self, s_emb: torch.Tensor, s_y: torch.Tensor, q_emb: torch.Tensor,
                               n_way: int | None = None) -> torch.Tensor:
        """Query logits from support/query embeddings (optional leading task dim)."""
        protos = prototypes(s_emb, s_y, n_way)
        if self.distance == "euclidean":
            return -torch.cdist(q_emb, protos).pow(2)
        return self.scale * F.normalize(q_emb, dim=-1) @ F.normalize(protos, dim=-1).transpose(-1, -2)

    def logits(self, support_x: Any, support_y: torch.Tensor, query_x: Any) -> torch.Tensor:
        """Query logits ``(..., N*Q, N)``."""
        return self.logits_from_embeddings(self.embed(support_x), support_y, self.embed(query_x))

    def loss(self, support_x: Any, support_y: torch.Tensor, query_x: Any, query_y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the queries (over all tasks of a batch)."""
        lg = self.logits(support_x, support_y, query_x)
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), query_y.reshape(-1))

    @torch.no_grad()
    def predict(self, support_x: Any, support_y: torch.Tensor, query_x: Any) -> torch.Tensor:
        """Predicted query labels."""
        return self.logits(support_x, support_y, query_x).argmax(-1)

    @staticmethod
    def linear_classifier(s_emb: torch.Tensor, s_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``W = 2 c_k`` and biases ``b = -||c_k||^2`` of the equivalent linear layer."""
        c = prototypes(s_emb, s_y)
        return 2 * c, -(c * c).sum(-1)
