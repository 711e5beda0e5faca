"""MAML, FOMAML and ANIL on ``torch.func``: one inner loop, ``vmap`` over tasks.

The model is used as a pure function of its parameters through
:func:`torch.func.functional_call`.  For one task, :meth:`MAML.adapt_task` takes
``torch.func.grad`` steps on the support loss.  For a meta-batch,
:meth:`MAML.task_losses` runs the same inner loop for all tasks at once: the
forward pass is :func:`torch.func.vmap`-ed over per-task copies of the adapted
parameters, and one ``torch.autograd.grad(create_graph=True)`` per step gives
every task's gradient (the tasks' losses are independent).  Autograd then
differentiates through the inner loop (second order) unless ``first_order=True``
(FOMAML), in which case the inner gradients are constants.

Only the parameters named by ``adapt`` change in the inner loop (all by default;
the head gives ANIL; the top layers of a transformer, or LoRA/adapter weights,
work the same way).  An optional ``body`` module runs *once* per task before
``model``: it is meta-learned by the outer loop but never adapted, so its output
is reused by every inner step while the outer gradient still flows through it.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from metabook.algorithms.base import Inputs, Learner, call_model

__all__ = ["MAML", "ANIL", "check_functional", "flat_tasks", "unflat_tasks"]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_functional(model: nn.Module) -> None:
    """Refuse modules that cannot run inside a functional inner loop.

    A BatchNorm layer that tracks running statistics updates its buffers in
    place on every forward pass; under ``vmap`` that fails, and across inner
    steps it mixes statistics of different tasks.
    """
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
            raise ValueError(
                f"module '{name or type(mod).__name__}' is a {type(mod).__name__} with "
                "track_running_stats=True: its running statistics are updated in place, which "
                "breaks vmap over tasks and leaks statistics between tasks. Build it with "
                "track_running_stats=False (per-batch statistics, as in the MAML paper), or use "
                "LayerNorm/GroupNorm.")


def flat_tasks(x: Inputs) -> Inputs:
    """Merge the task and example dimensions: ``(B, M, ...) -> (B*M, ...)``."""
    if isinstance(x, Mapping):
        return {k: v.flatten(0, 1) for k, v in x.items()}
    return x.flatten(0, 1)


def unflat_tasks(x: Any, b: int) -> Any:
    """Inverse of :func:`flat_tasks` for a tensor or a mapping of tensors."""
    if isinstance(x, Mapping):
        return {k: v.unflatten(0, (b, -1)) for k, v in x.items()}
    return x.unflatten(0, (b, -1))


def _select(names: list[str], adapt: Iterable[str] | Callable[[str], bool] | None) -> list[str]:
    if adapt is None:
        chosen = list(names)
    elif callable(adapt):
        chosen = [n for n in names if adapt(n)]
    else:
        chosen = list(adapt)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"adapt names unknown parameters {unknown[:5]}; the model has {names[:8]}...")
    if not chosen:
        raise ValueError("adapt selects no parameters")
    return chosen


class MAML(Learner):
    """Model-Agnostic Meta-Learning (Finn et al., 2017), and its first-order variant.

    Args:
        model: any ``nn.Module``; its parameters are the meta-learned initialization.
            Called as ``model(x)``, or ``model(**x)`` for a mapping; an output with
            ``.logits`` is read from there.
        inner_lr: step size of the inner (adaptation) loop, alpha.
        inner_steps: number of inner gradient steps.
        first_order: drop second-order terms (FOMAML).
        loss_fn: inner loss ``loss_fn(output, target)``, mean-reduced; cross-entropy by default.
        adapt: names (or a predicate on names) of the parameters of ``model`` that the
            inner loop adapts; all by default.  Adapting only the head gives ANIL.
        body: an optional module run once per task before ``model`` (meta-learned,
            never adapted), e.g. the frozen-in-the-inner-loop bottom of a transformer.
        outer_loss_fn: the query (outer) loss; ``loss_fn`` by default.
        allow_unused: adapted parameters that do not reach the support loss get a
            zero inner gradient instead of an error.
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward` (same gradients, less memory).

    Inputs carry a leading task dimension ``(B, ...)``; see :mod:`metabook.algorithms.base`.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        loss_fn: LossFn = F.cross_entropy,
        adapt: Iterable[str] | Callable[[str], bool] | None = None,
        *,
        body: nn.Module | None = None,
        outer_loss_fn: LossFn | None = None,
        allow_unused: bool = False,
        task_chunk: int | None = None,
    ) -> None:
        super().__init__(task_chunk)
        check_functional(model)
        if body is not None:
            check_functional(body)
        if not isinstance(inner_steps, int) or isinstance(inner_steps, bool) or inner_steps < 0:
            raise ValueError(f"inner_steps must be an int >= 0, got {inner_steps!r}")
        if not float(inner_lr) >= 0:
            raise ValueError(f"inner_lr must be >= 0, got {inner_lr!r}")
        self.model = model
        self.body = body
        self.inner_lr = float(inner_lr)
        self.inner_steps = inner_steps
        self.first_order = bool(first_order)
        self.loss_fn = loss_fn
        self.outer_loss_fn = outer_loss_fn or loss_fn
        self.allow_unused = bool(allow_unused)
        self.adapt_names = _select([n for n, _ in model.named_parameters()], adapt)

    # -- functional pieces -------------------------------------------------
    def params(self) -> Params:
        """The meta-parameters theta of ``model``, as a name -> tensor dict (with autograd)."""
        return dict(self.model.named_parameters())

    def forward_with(self, params: Params, x: Inputs) -> torch.Tensor:
        """Run ``model`` with ``params`` in place of its own parameters (one task, no task dim)."""
        buffers = dict(self.model.named_buffers())
        return call_model(lambda *a, **kw: functional_call(self.model, (params, buffers), a, kw), x)

    def support_features(self, support_x: Inputs, steps: int | None = None) -> Inputs:
        """:meth:`features` of the support set, or ``support_x`` untouched when the inner loop
        takes no step (it is then never read: zero-step MAML is supervised training on the query
        sets, and the body should not spend a forward pass on the support)."""
        return self.features(support_x) if (self.inner_steps if steps is None else steps) else support_x

    def features(self, x: Inputs) -> Inputs:
        """``body(x)`` for a meta-batch (tasks and examples flattened into one batch), or ``x``."""
        if self.body is None:
            return x
        b = next(iter(x.values())).shape[0] if isinstance(x, Mapping) else x.shape[0]
        return unflat_tasks(call_model(self.body, flat_tasks(x)), b)

    def _head(self, params: Params, h: Inputs) -> torch.Tensor:
        # The part of the model that the inner loop re-runs, on features(x) of one task.
        return self.forward_with(params, h)

    def inner_loss(self, params: Params, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        """Support loss of ``params`` on one task (``x`` already through ``body``)."""
        return self.loss_fn(self.forward_with(params, x), y)

    def _lr(self, name: str) -> float | torch.Tensor:
        return self.inner_lr

    def _step(self, name: str, p: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        if g is None:  # allow_unused: this parameter does not reach the support loss
            return p
        return p - (self._lr(name) * g).to(p.dtype)

    def adapt_task(self, params: Params, x: Inputs, y: torch.Tensor, steps: int | None = None) -> Params:
        """Inner loop on one task (no task dimension), with ``torch.func.grad``: the fast weights.

        ``x`` is what ``model`` takes: with ``body=``, the body's output for that task.
        """
        adapt = self.adapt_names
        fixed = {n: p for n, p in params.items() if n not in set(adapt)}
        step_grad = grad(lambda a: self.inner_loss({**fixed, **a}, x, y))
        fast = {n: params[n] for n in adapt}
        for _ in range(self.inner_steps if steps is None else steps):
            g = step_grad(fast)
            fast = {n: self._step(n, fast[n], g[n].detach() if self.first_order else g[n]) for n in adapt}
        return {**fixed, **fast}

    # -- the learner protocol ----------------------------------------------
    def adapt(self, support_x: Inputs, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights of every task: each adapted tensor gets a leading task dimension ``B``;
        the others are shared views.  Built without a second-order graph."""
        b = self.check(support_x, support_y)
        with torch.no_grad():
            hs = self.support_features(support_x, steps)
        with torch.enable_grad():
            fast, _ = self._inner_loop(hs, support_y, steps, create_graph=False)
        return {n: (v.detach() if n in self.adapt_names else v.detach().unsqueeze(0).expand(b, *v.shape))
                for n, v in fast.items()}

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """Query loss of each task after adaptation, ``(B,)``; differentiable w.r.t. theta
        (through the inner loop unless ``first_order``).  With ``inner_steps=0`` this is the
        plain query loss of theta (the support set is not read): supervised training.

        The forward pass is ``vmap``-ed over tasks with per-task copies of the adapted
        parameters; one ``torch.autograd.grad`` per inner step then yields every task's
        gradient at once (the tasks' losses are independent).
        """
        self.check(support_x, support_y, query_x, query_y)
        with torch.enable_grad():
            fast, forward = self._inner_loop(self.support_features(support_x), support_y, None,
                                             create_graph=not self.first_order, track=True)
            return vmap(self.outer_loss_fn)(forward(fast, self.features(query_x)), query_y)

    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """The adapted model's query outputs ``(B, M_q, ...)`` (values for regression, logits
        for classification), with no graph."""
        self.check(support_x, support_y, query_x)
        with torch.no_grad():
            hs, hq = self.support_features(support_x), self.features(query_x)
        with torch.enable_grad():
            fast, forward = self._inner_loop(hs, support_y, None, create_graph=False)
        with torch.no_grad():
            return forward({k: v.detach() for k, v in fast.items()}, hq)

    def _inner_loop(self, sx: Inputs, sy: torch.Tensor, steps: int | None, create_graph: bool,
                    track: bool = False):
        # track: fast weights stay connected to theta (training); else they start from a detached copy.
        b = sy.shape[0]
        adapt = set(self.adapt_names)
        fast = {}
        for n, p in self.params().items():
            if n in adapt:
                if not track:
                    p = p.detach()
                p = p if p.requires_grad else p.detach().requires_grad_(True)
                p = p.unsqueeze(0).expand(b, *p.shape)
            fast[n] = p
        if not track:
            sx = {k: v.detach() for k, v in sx.items()} if isinstance(sx, Mapping) else sx.detach()
        in_dims = ({n: (0 if n in adapt else None) for n in fast}, 0)
        forward = vmap(self._head, in_dims=in_dims, randomness="different")
        losses = vmap(self.loss_fn)
        for _ in range(self.inner_steps if steps is None else steps):
            total = losses(forward(fast, sx), sy).sum()  # task losses are independent
            grads = torch.autograd.grad(total, [fast[n] for n in self.adapt_names],
                                        create_graph=create_graph, allow_unused=self.allow_unused)
            for n, g in zip(self.adapt_names, grads):
                fast[n] = self._step(n, fast[n], g)
        return fast, forward


class ANIL(MAML):
    """Almost No Inner Loop (Raghu et al., 2020): MAML that adapts only the head.

    ``head`` is the prefix of the parameter names to adapt (for an
    ``nn.Sequential`` whose last layer is ``"2"``, pass ``head="2"``).  By
    default the parameters of the last child module are adapted.  When ``model``
    is an ``nn.Sequential`` whose head is its last child, the layers before it
    form the body and run once per task, not once per inner step; otherwise pass
    ``body=`` explicitly.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, loss_fn: LossFn = F.cross_entropy,
                 head: str | None = None, **kwargs: Any) -> None:
        children = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
        if head is None:
            if not children:
                raise ValueError("ANIL: cannot find a head; pass head='<parameter name prefix>'")
            head = children[-1]
        prefix = head + "."
        super().__init__(model, inner_lr, inner_steps, first_order, loss_fn,
                         adapt=lambda n: n.startswith(prefix) or n == head, **kwargs)
        self.head = head
        names = [n for n, _ in model.named_children()]
        self._split = (isinstance(model, nn.Sequential) and kwargs.get("body") is None
                       and names and names[-1] == head and len(names) > 1)

    def features(self, x: Inputs) -> Inputs:
        """The body's output: ``model[:-1]`` for a Sequential whose last child is the head."""
        if not self._split:
            return super().features(x)
        b = x.shape[0]
        return unflat_tasks(self.model[:-1](flat_tasks(x)), b)

    def _head(self, params: Params, h: Inputs) -> torch.Tensor:
        if not self._split:
            return super()._head(params, h)
        cut = len(self.head) + 1
        head_params = {n[cut:]: p for n, p in params.items() if n.startswith(self.head + ".")}
        return functional_call(self.model[-1], head_params, (h,))
