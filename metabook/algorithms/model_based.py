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

__all__ = ["InContextLearner"]


class InContextLearner(nn.Module):
    """Transformer encoder over support + query tokens.

    Args:
        in_dim: input feature size (e.g. 384 for MiniLM embeddings).
        max_way: largest N it can label.
        d_model, n_heads, n_layers, dropout: Transformer sizes.
    """

    def __init__(self, in_dim: int, max_way: int = 5, d_model: int = 128, n_heads: int = 4,
                 n_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_way = max_way
        self.inp = nn.Linear(in_dim + max_way, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, max_way)

    def logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Query logits ``(B, M_q, N)``; inputs carry a leading task dim (added if missing)."""
        single = support_y.dim() == 1
        if single:
            support_x, support_y, query_x = support_x[None], support_y[None], query_x[None]
        n_way = int(support_y.max()) + 1
        if n_way > self.max_way:
            raise ValueError(f"episode has {n_way} classes but max_way={self.max_way}")
        s = torch.cat([support_x, F.one_hot(support_y, self.max_way).to(support_x.dtype)], -1)
        q = torch.cat([query_x, query_x.new_zeros(*query_x.shape[:-1], self.max_way)], -1)
        tokens = self.inp(torch.cat([s, q], 1))
        ms, mq = s.shape[1], q.shape[1]
        # True = blocked: queries see the support set and themselves only.
        mask = torch.ones(ms + mq, ms + mq, dtype=torch.bool, device=tokens.device)
        mask[:, :ms] = False
        mask[torch.arange(ms + mq), torch.arange(ms + mq)] = False
        out = self.head(self.body(tokens, mask=mask)[:, ms:])[..., :n_way]
        return out[0] if single else out

    def loss(self, support_x, support_y, query_x, query_y) -> torch.Tensor:
        """Mean query cross-entropy."""
        lg = self.logits(support_x, support_y, query_x)
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), query_y.reshape(-1))

    @torch.no_grad()
    def predict(self, support_x, support_y, query_x) -> torch.Tensor:
        """Predicted query labels."""
        return self.logits(support_x, support_y, query_x).argmax(-1)
