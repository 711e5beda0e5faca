"""K-shot fine-tuning: full-way ProtoNet on the K labelled shots of every class.

This is ordinary (not episodic) fine-tuning, the second stage of the full-way
protocol of Bansal et al. and CPFT: the encoder sees only the K shots per class.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["shot_finetune", "clipped_step"]


def clipped_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, where: str,
                 max_norm: float = 1.0) -> float:
    """Backpropagate ``loss``, clip the gradient norm to ``max_norm`` and step; refuse a non-finite loss."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{where}: non-finite loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return loss.item()


def shot_finetune(encoder: Any, texts: list[str], labels: list[str], epochs: int, args: Any,
                  device: torch.device, *, batch_size: int = 32, seed: int = 0, progress: bool = True) -> list[float]:
    """Full-way ProtoNet fine-tuning of ``encoder`` (a :class:`~metabook.MiniLMEncoder`) on the K shots.

    Each epoch embeds every shot without gradients and keeps the per-class sums (a
    *prototype bank*).  Then, for mini-batches of shots embedded *with* gradients,
    the logits are ``args.scale`` times the cosine similarity to **all** class
    prototypes, the sentence's own class using its leave-one-out prototype (the mean
    of the class's other K-1 shots), and the loss is the cross-entropy.  This is a
    ProtoNet episode with every class as a negative, N-way (K-1)-shot, whose support
    embeddings are refreshed once per epoch.  AdamW with ``args.lr``.  Returns the
    per-batch losses.
    """
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need equally many texts and labels, got {len(texts)} and {len(labels)}")
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], device=device)
    counts = torch.bincount(y, minlength=len(classes))
    if int(counts.min()) < 2:
        raise ValueError("every class needs at least 2 shots for leave-one-out prototypes")
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for epoch in range(epochs):
        encoder.eval()
        with torch.no_grad():
            bank = encoder.encode(texts, cache=None, progress=False).to(device)
        sums = torch.zeros(len(classes), bank.shape[1], device=device).index_add_(0, y, bank)
        protos = F.normalize(sums / counts[:, None], dim=1)
        encoder.train()
        order = torch.randperm(len(texts), generator=gen).split(batch_size)
        for b in tqdm(order, desc=f"shots epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            b = b.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                e = encoder([texts[i] for i in b.tolist()]).float()
            yb = y[b]
            loo = F.normalize((sums[yb] - bank[b]) / (counts[yb] - 1)[:, None], dim=1)
            logits = args.scale * (e @ protos.T)
            own = args.scale * (e * loo).sum(1)
            logits = logits.scatter(1, yb[:, None], own[:, None])
            loss = F.cross_entropy(logits, yb)
            losses.append(clipped_step(loss, opt, params, f"shot fine-tuning, epoch {epoch + 1}"))
    encoder.eval()
    return losses
