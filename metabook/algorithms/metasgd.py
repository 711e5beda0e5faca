"""Meta-SGD (Li et al., 2017): MAML with a learned per-parameter inner learning rate."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.maml import MAML, LossFn

__all__ = ["MetaSGD"]


class MetaSGD(MAML):
    """MAML whose inner step is ``phi = theta - alpha * grad``, with ``alpha`` a learned
    tensor of the same shape as each adapted parameter (initialized to ``inner_lr``).

    ``alpha`` lives in ``self.lrs``, always in float32 (also for a bf16 or float64
    model; the step is cast to the parameter's dtype), and is meta-learned by the
    outer optimizer together with the model: pass ``metasgd.parameters()`` to it.
    Other keyword arguments are those of :class:`~metabook.MAML`.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, loss_fn: LossFn = F.cross_entropy, adapt=None,
                 **kwargs: Any) -> None:
        super().__init__(model, inner_lr, inner_steps, first_order, loss_fn, adapt, **kwargs)
        named = dict(model.named_parameters())
        self.lrs = nn.ParameterDict({
            n.replace(".", "__"): nn.Parameter(torch.full(named[n].shape, self.inner_lr,
                                                          dtype=torch.float32, device=named[n].device))
            for n in self.adapt_names})

    def _lr(self, name: str) -> torch.Tensor:
        return self.lrs[name.replace(".", "__")]

    def _apply(self, fn, recurse=True):  # .double()/.half() convert the model, never the rates
        dtypes = {k: p.dtype for k, p in self.lrs.items()}
        out = super()._apply(fn, recurse)
        for k, p in self.lrs.items():
            if p.dtype != dtypes[k]:
                p.data = p.data.to(dtypes[k])
        return out
