"""Reptile (Nichol, Achiam and Schulman, 2018): move the initialization toward adapted weights.

For each task, run ``inner_steps`` of plain SGD from theta to get phi_i.  The
meta-step is the interpolation ``theta <- theta + outer_lr * (mean_i phi_i - theta)``.
No second derivatives are needed; tasks of a meta-batch are adapted in parallel
with ``vmap``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from metabook.algorithms.maml import LossFn, Params, check_functional

__all__ = ["Reptile"]


class Reptile(nn.Module):
    """Reptile meta-learner.

    Args:
        model: the network whose parameters are the initialization theta.
        inner_lr: SGD step size inside a task.
        inner_steps: SGD steps per task (full support batch each step).
        outer_lr: epsilon, the interpolation step of the meta-update.
        loss_fn: mean-reduced ``loss_fn(output, target)``.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 5,
                 outer_lr: float = 0.1, loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__()
        check_functional(model)
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an int >= 1, got {inner_steps!r}")
        if not 0 < float(outer_lr) <= 1:
            raise ValueError(f"outer_lr must be in (0, 1], got {outer_lr!r}")
        self.model, self.loss_fn = model, loss_fn
        self.inner_lr, self.inner_steps, self.outer_lr = float(inner_lr), inner_steps, float(outer_lr)

    def _loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        buffers = dict(self.model.named_buffers())
        return self.loss_fn(functional_call(self.model, (params, buffers), (x,)), y)

    def adapt_task(self, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int | None = None) -> Params:
        """Plain SGD on one task; returns phi (no graph to theta)."""
        fast = {k: v.detach() for k, v in params.items()}
        for _ in range(self.inner_steps if steps is None else steps):
            g = grad(self._loss)(fast, x, y)
            fast = {k: fast[k] - self.inner_lr * g[k] for k in fast}
        return fast

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights for one task (no task dimension)."""
        return self.adapt_task(dict(self.model.named_parameters()), support_x, support_y, steps)

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights for B tasks (leading task dimension)."""
        params = dict(self.model.named_parameters())
        return vmap(lambda x, y: self.adapt_task(params, x, y, steps), randomness="different")(
            support_x, support_y)

    @torch.no_grad()
    def meta_step(self, support_x: torch.Tensor, support_y: torch.Tensor) -> float:
        """One Reptile update from a meta-batch (leading task dim); returns ``||mean phi - theta||``."""
        with torch.enable_grad():
            phi = self.adapt_batch(support_x, support_y)
        sq = 0.0
        for name, p in self.model.named_parameters():
            delta = phi[name].mean(0) - p
            sq += float(delta.pow(2).sum())
            p.add_(delta, alpha=self.outer_lr)
        return sq ** 0.5

    @torch.no_grad()
    def outputs(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """The adapted model's query outputs (values or logits); leading task dimension."""
        with torch.enable_grad():
            fast = self.adapt_batch(support_x, support_y)
        buffers = dict(self.model.named_buffers())
        return vmap(lambda p, x: functional_call(self.model, (p, buffers), (x,)),
                    randomness="different")(fast, query_x)

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Predicted query class labels (``outputs(...).argmax(-1)``)."""
        return self.outputs(support_x, support_y, query_x).argmax(-1)
