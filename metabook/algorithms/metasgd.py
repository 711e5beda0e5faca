"""Meta-SGD (Li et al., 2017): MAML with a learned per-parameter inner learning rate."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms.maml import MAML, LossFn

__all__ = ["MetaSGD"]


class MetaSGD(MAML):
    """MAML whose inner step is ``phi = theta - alpha * grad``, with ``alpha`` a learned
    tensor of the same shape as each parameter (initialized to ``inner_lr``).

    ``alpha`` lives in ``self.lrs`` and is meta-learned by the outer optimizer
    together with the model: pass ``metasgd.parameters()`` to the optimizer.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, loss_fn: LossFn = F.cross_entropy, adapt=None) -> None:
        super().__init__(model, inner_lr, inner_steps, first_order, loss_fn, adapt)
        named = dict(model.named_parameters())
        self.lrs = nn.ParameterDict({
            n.replace(".", "__"): nn.Parameter(torch.full_like(named[n], self.inner_lr))
            for n in self.adapt_names})

    def _lr(self, name: str) -> torch.Tensor:
        return self.lrs[name.replace(".", "__")]
