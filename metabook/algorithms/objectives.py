"""Pure self-supervised and contrastive objectives: what a learner (or a recipe) minimises.

These are functions of tensors (and one small module) with no data, optimizer or loop in
them, so they sit in the algorithms layer and any learner or training recipe can use them:

* :func:`simcse_loss` -- unsupervised SimCSE (Gao et al., 2021): a sentence encoded twice
  with dropout is its own positive, the batch's other sentences are negatives;
* :func:`supcon_loss` -- the supervised contrastive loss (Khosla et al., 2020);
* :func:`mask_tokens` -- BERT's 80/10/10 masking of the non-special tokens;
* :class:`MaskedLMHead` -- BERT's LM head, its decoder tied to the word embeddings.

The self-supervised controls (:mod:`metabook.algorithms.controls`) and CPFT's recipe
(:mod:`metabook.train.contrastive`) are built from them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["simcse_loss", "supcon_loss", "mask_tokens", "MaskedLMHead"]


def simcse_loss(a: torch.Tensor, b: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Unsupervised SimCSE: row ``i`` of ``a`` should pick row ``i`` of ``b`` among all rows of ``b``.

    ``a`` and ``b`` are ``(B, D)`` embeddings of the same ``B`` sentences (two dropout masks);
    the loss is the cross-entropy of ``cos(a_i, b_j) / tau`` over ``j``.
    """
    if a.shape != b.shape or a.dim() != 2 or a.shape[0] < 2:
        raise ValueError(f"simcse_loss needs two (B, D) batches with B >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def supcon_loss(z: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020, the "out" form).

    For each anchor ``i`` with at least one other example of its class, minus the mean over its
    positives ``p`` of ``log softmax_j(cos(z_i, z_j) / tau)[p]``, ``j`` ranging over every other
    example; averaged over those anchors.
    """
    if z.dim() != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"supcon_loss needs (B, D) embeddings and (B,) labels, got {tuple(z.shape)}, {tuple(y.shape)}")
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.T / tau
    eye = torch.eye(len(y), dtype=torch.bool, device=z.device)
    log_prob = sim.masked_fill(eye, float("-inf")).log_softmax(dim=1)
    pos = (y[:, None] == y[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        raise ValueError("supcon_loss needs at least two examples of some class in the batch")
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has]
    return -mean_pos.mean()


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int,
                p: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose each non-special token with probability ``p``; of those, 80%
    become ``mask_id``, 10% a random token and 10% stay. Returns ``(inputs, labels)`` with
    labels ``-100`` where nothing is predicted. At least one token per batch is chosen.

    ``special`` (same shape, bool) marks the tokens never chosen (``[CLS]``, ``[SEP]``,
    padding ...). The random draws come from ``generator`` (a CPU generator; ``None``: torch's
    global CPU generator) and are moved to ``input_ids``' device.
    """
    if not 0 < p < 1:
        raise ValueError(f"mask probability must be in (0, 1), got {p}")
    if special.shape != input_ids.shape:
        raise ValueError(f"special has shape {tuple(special.shape)} but input_ids {tuple(input_ids.shape)}")
    if bool(special.all()):
        raise ValueError("mask_tokens: every token is special; there is nothing to predict")
    gen = dict(generator=generator)
    u = torch.rand(input_ids.shape, **gen).to(input_ids.device)
    chosen = (u < p) & ~special
    if not chosen.any():  # a very short batch: predict its first ordinary token
        idx = (~special).flatten().nonzero()[0]
        chosen.view(-1)[idx] = True
    labels = input_ids.masked_fill(~chosen, -100)
    r = torch.rand(input_ids.shape, **gen).to(input_ids.device)
    inputs = input_ids.masked_fill(chosen & (r < 0.8), mask_id)
    rand = chosen & (r >= 0.8) & (r < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, **gen).to(input_ids.device)
    inputs = torch.where(rand, random_ids, inputs)
    return inputs, labels


class MaskedLMHead(nn.Module):
    """BERT's LM head with tied weights: ``LayerNorm(gelu(dense(h))) @ E.T + bias``, ``E`` the
    encoder's word-embedding matrix (shared, not copied). The dense, norm and bias start fresh,
    since sentence-transformers checkpoints ship without an LM head."""

    def __init__(self, embeddings: nn.Embedding, eps: float = 1e-12) -> None:
        super().__init__()
        dim = embeddings.weight.shape[1]
        self.dense, self.norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=eps)
        self.embeddings = embeddings
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` hidden states -> ``(..., V)`` vocabulary logits."""
        return self.norm(F.gelu(self.dense(hidden))) @ self.embeddings.weight.T + self.bias
