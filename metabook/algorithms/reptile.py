"""Reptile (Nichol, Achiam and Schulman, 2018): move the initialization toward adapted weights.

For each task, run ``inner_steps`` of plain SGD from theta to get phi_i.  The
meta-step is the interpolation ``theta <- theta + outer_lr * (mean_i phi_i - theta)``.
No second derivatives are needed; tasks of a meta-batch are adapted in parallel
with ``vmap``.

For the one trainer, Reptile's outer objective is the surrogate
``l_i(theta) = 1/2 ||theta - sg(phi_i)||^2`` (``sg``: stop-gradient), whose
gradient is ``theta - phi_i``: SGD with learning rate epsilon on their mean *is*
Reptile's update, and Adam on it is the variant Nichol et al. also report.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from metabook.algorithms.base import Inputs, Learner, call_model
from metabook.algorithms.maml import LossFn, Params, check_functional

__all__ = ["Reptile"]


class Reptile(Learner):
    """Reptile meta-learner.

    Args:
        model: the network whose parameters are the initialization theta.
        inner_lr: SGD step size inside a task.
        inner_steps: SGD steps per task (full support batch each step).
        outer_lr: epsilon, the interpolation step of :meth:`meta_step`.
        loss_fn: mean-reduced ``loss_fn(output, target)``.
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.

    The support set is what each task trains on; the query set is not used by
    the meta-update (concatenate it into the support set to train on both).
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 5,
                 outer_lr: float = 0.1, loss_fn: LossFn = F.cross_entropy,
                 task_chunk: int | None = None) -> None:
        super().__init__(task_chunk)
        check_functional(model)
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an int >= 1, got {inner_steps!r}")
        if not 0 < float(outer_lr) <= 1:
            raise ValueError(f"outer_lr must be in (0, 1], got {outer_lr!r}")
        self.model, self.loss_fn = model, loss_fn
        self.inner_lr, self.inner_steps, self.outer_lr = float(inner_lr), inner_steps, float(outer_lr)

    def forward_with(self, params: Params, x: Inputs) -> torch.Tensor:
        """Run the model with ``params`` (one task, no task dimension)."""
        buffers = dict(self.model.named_buffers())
        return call_model(lambda *a, **kw: functional_call(self.model, (params, buffers), a, kw), x)

    def _loss(self, params: Params, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.forward_with(params, x), y)

    def adapt_task(self, params: Params, x: Inputs, y: torch.Tensor, steps: int | None = None) -> Params:
        """Plain SGD on one task (no task dimension); returns phi (no graph to theta)."""
        fast = {k: v.detach() for k, v in params.items()}
        for _ in range(self.inner_steps if steps is None else steps):
            g = grad(self._loss)(fast, x, y)
            fast = {k: fast[k] - self.inner_lr * g[k] for k in fast}
        return fast

    def adapt(self, support_x: Inputs, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights phi of every task (leading task dimension on every tensor), no graph."""
        self.check(support_x, support_y)
        params = dict(self.model.named_parameters())
        with torch.enable_grad():
            phi = vmap(lambda x, y: self.adapt_task(params, x, y, steps), randomness="different")(
                support_x, support_y)
        return {k: v.detach() for k, v in phi.items()}

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """The surrogate ``1/2 ||theta - phi_i||^2`` of each task: its gradient is ``theta - phi_i``."""
        self.check(support_x, support_y, query_x, query_y)
        phi = self.adapt(support_x, support_y)
        sq = [0.5 * (p.unsqueeze(0) - phi[n]).pow(2).flatten(1).sum(1) for n, p in self.model.named_parameters()]
        return torch.stack(sq).sum(0)

    @torch.no_grad()
    def meta_step(self, support_x: Inputs, support_y: torch.Tensor) -> float:
        """One Reptile update in place from a meta-batch; returns ``||mean phi - theta||``."""
        phi = self.adapt(support_x, support_y)
        sq = 0.0
        for name, p in self.model.named_parameters():
            delta = phi[name].mean(0) - p
            sq += float(delta.pow(2).sum())
            p.add_(delta, alpha=self.outer_lr)
        return sq ** 0.5

    @torch.no_grad()
    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """The adapted model's query outputs (values or logits) ``(B, M_q, ...)``."""
        self.check(support_x, support_y, query_x)
        fast = self.adapt(support_x, support_y)
        return vmap(self.forward_with, randomness="different")(fast, query_x)

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, outer_lr={self.outer_lr}"
