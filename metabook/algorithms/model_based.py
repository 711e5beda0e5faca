"""A model-based meta-learner: a small Transformer that learns in context.

The article's third family (model-based, e.g. MANN, SNAIL, CNPs) puts the
learning algorithm inside the network's forward pass.  ``InContextLearner``
reads the labelled support set as a sequence of tokens ``[x_i ; onehot(y_i)]``
and each query as ``[x_q ; 0]``; queries attend to the support set (and to
themselves, never to other queries), and a linear head reads off the label.
No gradient step happens at test time: adaptation is a forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.base import Learner, encode_tasks

__all__ = ["InContextLearner"]


class InContextLearner(Learner):
    """Transformer encoder over support + query tokens.

    Args:
        in_dim: input feature size (e.g. 384 for MiniLM embeddings).
        max_way: largest N it can label.
        d_model, n_heads, n_layers, dropout: Transformer sizes.
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.
        encoder: optional module that embeds the inputs first (e.g. a
            :class:`~metabook.bert.SentenceEncoder` on token mappings), trained with the rest.

    Inputs are embeddings with a leading task dimension, ``(B, M, in_dim)``, or
    whatever ``encoder`` takes, with the same leading ``(B, M)``.
    """

    def __init__(self, in_dim: int, max_way: int = 5, d_model: int = 128, n_heads: int = 4,
                 n_layers: int = 2, dropout: float = 0.0, task_chunk: int | None = None,
                 encoder: nn.Module | None = None) -> None:
        super().__init__(task_chunk)
        self.encoder = encoder
        self.max_way = max_way
        self.inp = nn.Linear(in_dim + max_way, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, max_way)

    def embed(self, x):
        """``x`` itself, or its embeddings ``(B, M, in_dim)`` when there is an encoder."""
        return x if self.encoder is None else encode_tasks(self.encoder, x)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """The support set as tokens ``(B, M_s, d_model)``: the whole of adaptation is reading them."""
        self.check(support_x, support_y)
        n_way = int(support_y.max()) + 1
        if n_way > self.max_way:
            raise ValueError(f"episode has {n_way} classes but max_way={self.max_way}")
        support_x = self.embed(support_x)
        return self.inp(torch.cat([support_x, F.one_hot(support_y, self.max_way).to(support_x.dtype)], -1))

    def logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits ``(B, M_q, N)``."""
        self.check(support_x, support_y, query_x)
        s = self.adapt(support_x, support_y)
        query_x = self.embed(query_x)
        q = self.inp(torch.cat([query_x, query_x.new_zeros(*query_x.shape[:-1], self.max_way)], -1))
        ms, mq = s.shape[1], q.shape[1]
        # True = blocked: queries see the support set and themselves only.
        mask = torch.ones(ms + mq, ms + mq, dtype=torch.bool, device=s.device)
        mask[:, :ms] = False
        mask[torch.arange(ms + mq), torch.arange(ms + mq)] = False
        n_way = int(support_y.max()) + 1
        return self.head(self.body(torch.cat([s, q], 1), mask=mask)[:, ms:])[..., :n_way]

    def task_losses(self, support_x, support_y, query_x, query_y) -> torch.Tensor:
        """Query cross-entropy of each task, ``(B,)``."""
        self.check(support_x, support_y, query_x, query_y)
        lg = self.logits(support_x, support_y, query_x)
        return F.cross_entropy(lg.transpose(1, 2), query_y, reduction="none").mean(1)

    def loss(self, support_x, support_y, query_x, query_y) -> torch.Tensor:
        """Mean query cross-entropy (the same as :meth:`~metabook.algorithms.base.Learner.meta_loss`)."""
        return self.meta_loss(support_x, support_y, query_x, query_y)
