"""Contrastive pre-training and fine-tuning of a sentence encoder: CPFT's recipe (Zhang et al.,
2021) at MiniLM scale.

* Stage 1, :func:`contrastive_pretrain`, on unlabeled sentences: SimCSE (Gao et al., 2021), in
  which a sentence encoded twice with dropout is its own positive and the batch's other sentences
  are negatives, plus masked-LM through a BERT LM head whose decoder is the word-embedding
  matrix. The second view is the masked copy, so one forward pass gives both the second
  embedding and the masked-LM logits.
* Stage 2, :func:`supcon_finetune`, on the K labelled shots: supervised contrastive loss
  (Khosla et al., 2020) plus cross-entropy of a cosine classifier whose weights start at the
  class means. Every layer trains, and the classifier predicts.

The objectives themselves (:func:`~metabook.algorithms.objectives.simcse_loss`,
:func:`~metabook.algorithms.objectives.supcon_loss`, :func:`~metabook.algorithms.objectives.mask_tokens`,
:class:`~metabook.algorithms.objectives.MaskedLMHead`) live in :mod:`metabook.algorithms.objectives`
and are importable from here as well.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

# The pure objectives live in the algorithms layer; they are re-imported here so that
# ``from metabook.train.contrastive import simcse_loss`` keeps working (documented there, not here).
from metabook.algorithms.objectives import MaskedLMHead, mask_tokens, simcse_loss, supcon_loss  # noqa: F401
from metabook.encoders import mean_pool
from metabook.train.finetune import clipped_step

__all__ = ["contrastive_pretrain", "supcon_finetune", "CosineClassifier"]


def _pool(encoder: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch.get("token_type_ids"))
    return mean_pool(out.last_hidden_state, batch["attention_mask"]), out.last_hidden_state


def contrastive_pretrain(encoder: Any, texts: Sequence[str], steps: int, *, batch_size: int = 32, lr: float = 2e-5,
                         tau: float = 0.05, mlm_weight: float = 1.0, mask_prob: float = 0.15, seed: int = 0,
                         progress: bool = True) -> list[dict[str, float]]:
    """Stage 1: ``steps`` AdamW steps of SimCSE + ``mlm_weight`` x masked-LM on batches of the
    unlabeled ``texts`` (shuffled epochs). ``encoder`` is a :class:`~metabook.MiniLMEncoder`,
    trained in place, every layer. Returns per-step ``{"simcse", "mlm"}`` losses."""
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise ValueError(f"contrastive pre-training needs at least 2 non-empty sentences, got {len(texts)}")
    if steps < 0 or batch_size < 2:
        raise ValueError(f"need steps >= 0 and batch_size >= 2, got {steps} and {batch_size}")
    with _seeded(seed, encoder.device):  # dropout and the head's initialisation
        return _contrastive_pretrain(encoder, texts, steps, batch_size, lr, tau, mlm_weight, mask_prob, seed, progress)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generator (dropout) inside, and restore it on leaving."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _contrastive_pretrain(encoder, texts, steps, batch_size, lr, tau, mlm_weight, mask_prob, seed, progress):
    tok = encoder.tokenizer
    head = MaskedLMHead(encoder.model.get_input_embeddings()).to(encoder.device)
    params = [p for p in encoder.parameters() if p.requires_grad] + [p for n, p in head.named_parameters()
                                                                     if not n.startswith("embeddings.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    log: list[dict[str, float]] = []
    encoder.train()
    for step in tqdm(range(steps), desc="contrastive pre-training", disable=not progress):
        if len(order) < batch_size:
            order += torch.randperm(len(texts), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = encoder.tokenize([texts[i] for i in idx])
        special = torch.tensor([tok.get_special_tokens_mask(ids, already_has_special_tokens=True)
                                for ids in batch["input_ids"].tolist()], dtype=torch.bool, device=encoder.device)
        special |= batch["attention_mask"] == 0
        masked, labels = mask_tokens(batch["input_ids"], special, tok.mask_token_id, head.embeddings.num_embeddings,
                                     mask_prob, gen)
        a, _ = _pool(encoder, batch)
        b, hidden = _pool(encoder, {**batch, "input_ids": masked})
        l_cl = simcse_loss(a, b, tau)
        l_mlm = F.cross_entropy(head(hidden[labels != -100]), labels[labels != -100])
        clipped_step(l_cl + mlm_weight * l_mlm, opt, params, f"contrastive pre-training, step {step + 1}")
        log.append({"simcse": l_cl.item(), "mlm": l_mlm.item()})
    encoder.eval()
    return log


class CosineClassifier(nn.Module):
    """``scale * cos(x, w_c)`` logits; :meth:`from_means` starts ``w_c`` at each class's mean embedding."""

    def __init__(self, weight: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.weight, self.scale = nn.Parameter(weight.clone()), float(scale)

    @classmethod
    def from_means(cls, emb: torch.Tensor, y: torch.Tensor, n_classes: int, scale: float = 20.0) -> "CosineClassifier":
        """A classifier whose row ``c`` is the mean of the embeddings ``emb`` labelled ``c`` in ``y``."""
        sums = torch.zeros(n_classes, emb.shape[1], device=emb.device).index_add_(0, y, emb)
        return cls(sums / torch.bincount(y, minlength=n_classes)[:, None].clamp(min=1), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M, D)`` embeddings -> ``(M, C)`` logits."""
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def supcon_finetune(encoder: Any, texts: Sequence[str], labels: Sequence[str], epochs: int, *, batch_size: int = 32,
                    lr: float = 2e-5, tau: float = 0.1, scale: float = 20.0, seed: int = 0,
                    progress: bool = True) -> tuple[CosineClassifier, list[str], list[float]]:
    """Stage 2: ``epochs`` over the shots with supervised contrastive + cross-entropy loss.

    Returns the trained classifier, its class order and the per-batch losses; predict with
    ``classes[classifier(encoder.encode(x)).argmax(1)]``. Every batch holds whole classes
    (their shots together), so each anchor has positives.
    """
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need equally many texts and labels, got {len(texts)} and {len(labels)}")
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], device=encoder.device)
    if int(torch.bincount(y).min()) < 2:
        raise ValueError("every class needs at least 2 shots for the supervised contrastive loss")
    with _seeded(seed, encoder.device):  # dropout
        return _supcon_finetune(encoder, texts, labels, y, classes, epochs, batch_size, lr, tau, scale, seed, progress)


def _supcon_finetune(encoder, texts, labels, y, classes, epochs, batch_size, lr, tau, scale, seed, progress):
    encoder.eval()
    with torch.no_grad():
        clf = CosineClassifier.from_means(encoder.encode(list(texts), cache=None, progress=False).to(encoder.device),
                                          y, len(classes), scale)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(clf.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(y.cpu() == c).flatten() for c in range(len(classes))]
    per_batch = max(1, batch_size // max(len(b) for b in by_class))
    losses: list[float] = []
    encoder.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(classes), generator=gen).split(per_batch)
        for cs in tqdm(perm, desc=f"supcon epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            idx = torch.cat([by_class[c] for c in cs.tolist()])
            e = encoder([texts[i] for i in idx.tolist()])
            yb = y[idx.to(y.device)]
            loss = supcon_loss(e, yb, tau) + F.cross_entropy(clf(e), yb)
            losses.append(clipped_step(loss, opt, params, f"supervised contrastive fine-tuning, epoch {epoch + 1}"))
    encoder.eval()
    return clf, classes, losses
