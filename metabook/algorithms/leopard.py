"""LEOPARD (Bansal, Jha and McCallum, 2020): MAML with a generated softmax layer and per-layer rates.

Each task's output layer is *generated* from its support set: for class ``c``,
``[w_c, b_c] = mean_{x in S_c} g_psi(f_theta(x))`` (``g_psi`` maps an embedding
``(D,)`` to ``(D' + 1,)``: the weights and the bias).  A query is scored with
``w_c . h(f(x)) + b_c`` (``h`` is an optional task-specific layer, identity by
default, so ``D' = D``).  Then a few SGD steps on the support cross-entropy adapt
the encoder's top layers, ``h`` and the generated ``W, b`` together; each layer
(parameter group) has its own meta-learned inner learning rate.  The query loss
after adaptation is differentiated through the inner loop (second order unless
``first_order=True``) w.r.t. the encoder, the generator ``psi`` and the rates.
Since the softmax is generated, one learner serves tasks with any number of classes.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from metabook.algorithms.base import Inputs, Learner, call_model, encode_tasks
from metabook.algorithms.maml import Params, check_functional, flat_tasks, unflat_tasks

__all__ = ["Leopard", "layer_group"]


def layer_group(name: str) -> str:
    """The rate group of a parameter: its name up to the first layer index (``encoder.slice.layers.1``),
    else the module that owns it (``softmax`` for ``softmax.weight`` and ``softmax.bias``)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return ".".join(parts[:-1]) or name


class Leopard(Learner):
    """LEOPARD meta-learner (classification).

    Args:
        encoder: the adapted part ``f``: ``(M, ...) -> (M, D)`` (e.g. the top layers of a BERT,
            :class:`~metabook.bert.SentenceEncoder`; an MLP on embeddings); ``None``: the inputs
            (or the body's outputs) are the embeddings and only ``h`` and the softmax adapt.
        dim: ``D``, the width of ``f``'s output; default ``encoder.dim``.
        generator: ``g_psi``: ``(..., D) -> (..., D' + 1)``; default ``Linear(D, D) -> Tanh ->
            Linear(D, D' + 1)``.  With a zero last layer the first inner step starts from a zero
            softmax, as MAML's zero head does (``python -m metabook.train`` builds it so).
        head: ``h_phi``, an optional task-specific layer ``(M, D) -> (M, D')`` adapted with the rest.
        head_dim: ``D'`` (needed for the default generator when ``head`` is given).
        inner_lr: the initial value of every per-layer rate.
        inner_steps: SGD steps on the support set (0: the generated classifier as is).
        first_order: drop second-order terms of the inner loop.
        body: an optional module run once per task before ``encoder``, meta-learned but never adapted
            (:func:`~metabook.bert.split_top` gives the body and the top of a BERT).
        group: maps a parameter name (``encoder.*``, ``head.*``, ``softmax.weight``/``bias``) to its
            rate group; :func:`layer_group` by default (one rate per layer, one for the softmax).
        task_chunk: tasks per chunk in :meth:`~metabook.algorithms.base.Learner.outer_backward`.

    The rates are scalars in ``self.lrs`` (one per group, float32 like
    :class:`~metabook.MetaSGD`'s), meta-learned with everything else.  Labels of every task
    must cover ``0..N-1`` in its support set.
    """

    def __init__(self, encoder: nn.Module | None, dim: int | None = None, *, generator: nn.Module | None = None,
                 head: nn.Module | None = None, head_dim: int | None = None, inner_lr: float = 0.01,
                 inner_steps: int = 1, first_order: bool = False, body: nn.Module | None = None,
                 group: Callable[[str], str] = layer_group, task_chunk: int | None = None) -> None:
        super().__init__(task_chunk)
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
            raise ValueError(f"inner_steps must be an int >= 0, got {inner_steps!r}")
        if not float(inner_lr) >= 0:
            raise ValueError(f"inner_lr must be >= 0, got {inner_lr!r}")
        self.encoder = encoder if encoder is not None else nn.Identity()
        self.head, self.body = head, body
        if generator is None:
            dim = dim if dim is not None else getattr(encoder, "dim", None)
            if dim is None or (head is not None and head_dim is None):
                raise ValueError("Leopard: pass dim= (and head_dim= with a head), or your own generator=")
            generator = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, (head_dim or dim) + 1))
        self.generator = generator
        for m in (self.encoder, head, body, generator):
            if m is not None:
                check_functional(m)
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), inner_steps, bool(first_order)
        self.adapt_names = [n for n, _ in self._adapted()] + ["softmax.weight", "softmax.bias"]
        self.groups = {n: group(n) for n in self.adapt_names}
        self.lrs = nn.ParameterDict({
            g.replace(".", "__"): nn.Parameter(torch.tensor(self.inner_lr, dtype=torch.float32))
            for g in dict.fromkeys(self.groups.values())})

    def _adapted(self) -> list[tuple[str, torch.Tensor]]:
        mods = [("encoder", self.encoder), ("head", self.head)]
        return [(f"{p}.{n}", t) for p, m in mods if m is not None for n, t in m.named_parameters()]

    def _apply(self, fn, recurse=True):  # .double()/.half() convert the model, never the rates
        dtypes = {k: p.dtype for k, p in self.lrs.items()}
        out = super()._apply(fn, recurse)
        for k, p in self.lrs.items():
            p.data = p.data.to(dtypes[k])
        return out

    def lr(self, name: str) -> torch.Tensor:
        """The inner learning rate of the adapted parameter ``name``."""
        return self.lrs[self.groups[name].replace(".", "__")]

    def n_way(self, support_y: torch.Tensor, query_y: torch.Tensor | None = None) -> int:
        """``N``; raise ``ValueError`` unless every task's support labels cover ``0..N-1`` (and the
        query labels lie in it)."""
        if support_y.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"support_y must hold integer class labels, got {support_y.dtype}")
        if support_y.dim() != 2 or support_y.shape[1] == 0:
            raise ValueError(f"support_y has shape {tuple(support_y.shape)}: expected (B, M) labels, M >= 1")
        if int(support_y.min()) < 0:
            raise ValueError(f"support_y has the label {int(support_y.min())}: labels must be 0..N-1")
        n = int(support_y.max()) + 1
        missing = (F.one_hot(support_y.long(), n).sum(1) == 0).nonzero()
        if len(missing):
            t, c = missing[0].tolist()
            raise ValueError(f"class {c} has no support example in task {t}: the support labels of every "
                             f"task must cover 0..{n - 1} (LEOPARD generates each class's softmax row "
                             "from its support examples)")
        if query_y is not None and query_y.numel() and (int(query_y.min()) < 0 or int(query_y.max()) >= n):
            raise ValueError(f"query_y has labels outside 0..{n - 1}, the classes of the support set")
        return n

    def features(self, x: Inputs) -> Inputs:
        """``body(x)`` for a meta-batch (tasks and examples flattened into one batch), or ``x``."""
        if self.body is None:
            return x
        b = next(iter(x.values())).shape[0] if isinstance(x, Mapping) else x.shape[0]
        return unflat_tasks(call_model(self.body, flat_tasks(x)), b)

    def _generate(self, hs: Inputs, sy: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.generator(encode_tasks(self.encoder, hs))  # (B, M, D' + 1)
        onehot = F.one_hot(sy.long(), n).to(out.dtype)  # (B, M, N)
        mean = onehot.transpose(1, 2) @ out / onehot.sum(1).unsqueeze(-1)  # (B, N, D' + 1)
        return mean[..., :-1], mean[..., -1]

    def generate(self, support_x: Inputs, support_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generated softmax of every task before adaptation: ``W (B, N, D')``, ``b (B, N)``
        (with a graph to the encoder and the generator)."""
        self.check(support_x, support_y)
        return self._generate(self.features(support_x), support_y, self.n_way(support_y))

    def forward_with(self, fast: Params, x: Inputs) -> torch.Tensor:
        """Logits ``(M, N)`` of one task (no task dimension) with the fast weights ``fast``."""
        def run(prefix: str, module: nn.Module, inp):
            params = {n[len(prefix):]: v for n, v in fast.items() if n.startswith(prefix)}
            buffers = dict(module.named_buffers())
            return call_model(lambda *a, **kw: functional_call(module, (params, buffers), a, kw), inp)
        h = run("encoder.", self.encoder, x)
        if self.head is not None:
            h = run("head.", self.head, h)
        return h @ fast["softmax.weight"].transpose(-1, -2) + fast["softmax.bias"]

    def _inner_loop(self, hs: Inputs, sy: torch.Tensor, n: int, steps: int | None, create_graph: bool,
                    track: bool) -> Params:
        # track: the fast weights stay connected to the meta-parameters (training); else detached copies.
        b = sy.shape[0]
        with torch.set_grad_enabled(track):
            w, bias = self._generate(hs, sy, n)
        fast = {n_: p.unsqueeze(0).expand(b, *p.shape) for n_, p in self._adapted()}
        fast.update({"softmax.weight": w, "softmax.bias": bias})
        if not track:
            hs = {k: v.detach() for k, v in hs.items()} if isinstance(hs, Mapping) else hs.detach()
        fast = {k: v if track and v.requires_grad else v.detach().requires_grad_(True) for k, v in fast.items()}
        forward = vmap(self.forward_with, randomness="different")
        for _ in range(self.inner_steps if steps is None else steps):
            lg = forward(fast, hs)
            loss = F.cross_entropy(lg.transpose(1, 2), sy, reduction="none").mean(1).sum()  # tasks independent
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph, allow_unused=True)
            fast = {k: v if g is None else v - (self.lr(k) * g).to(v.dtype)
                    for (k, v), g in zip(fast.items(), grads)}
        return fast

    def adapt(self, support_x: Inputs, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights of every task, each with a leading task dimension ``B``: the adapted
        ``encoder.*``/``head.*`` parameters, ``softmax.weight (B, N, D')`` and ``softmax.bias (B, N)``.
        No second-order graph; ``steps=0`` gives the generated softmax."""
        self.check(support_x, support_y)
        n = self.n_way(support_y)
        with torch.no_grad():
            hs = self.features(support_x)
        with torch.enable_grad():
            fast = self._inner_loop(hs, support_y, n, steps, create_graph=False, track=False)
        return {k: v.detach() for k, v in fast.items()}

    def logits(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs) -> torch.Tensor:
        """Query logits ``(B, M_q, N)`` after adaptation, with no graph."""
        self.check(support_x, support_y, query_x)
        fast = self.adapt(support_x, support_y)
        with torch.no_grad():
            return vmap(self.forward_with, randomness="different")(fast, self.features(query_x))

    def task_losses(self, support_x: Inputs, support_y: torch.Tensor, query_x: Inputs,
                    query_y: torch.Tensor) -> torch.Tensor:
        """Query cross-entropy of each task after adaptation, ``(B,)``; differentiable w.r.t. the
        encoder, body, head, generator and rates (through the inner loop unless ``first_order``)."""
        self.check(support_x, support_y, query_x, query_y)
        n = self.n_way(support_y, query_y)
        with torch.enable_grad():
            fast = self._inner_loop(self.features(support_x), support_y, n, None,
                                    create_graph=not self.first_order, track=True)
            lg = vmap(self.forward_with, randomness="different")(fast, self.features(query_x))
            return F.cross_entropy(lg.transpose(1, 2), query_y, reduction="none").mean(1)

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, first_order={self.first_order}"
