"""The learner protocol: one contract over all eight learners, tensors and mappings alike.

Each learner is built twice: on embeddings (a tensor ``(B, M, D)``) and on token
mappings (``input_ids``/``attention_mask``, ``(B, M, L)``) through a tiny randomly
initialised BERT.  The contract: ``task_losses`` is ``(B,)`` and differentiable,
``meta_loss`` is its mean, ``outer_backward`` matches ``meta_loss().backward()``,
``adapt`` returns per-task state, ``logits``/``predict`` have the queries' shape and
no graph, unbatched or mismatched inputs raise a ``ValueError`` naming the tensor.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from transformers.modeling_outputs import SequenceClassifierOutput

from metabook import (ANIL, MAML, InContextLearner, Learner, Leopard, MetaSGD, ProtoNet, Reptile, evaluate, mlp,
                      stack_episodes)
from metabook.bert import SentenceEncoder, TextClassifier, split_top, tiny_bert
from metabook.tasks import Episode

B, N, K, Q, D, L, VOCAB = 3, 3, 2, 2, 8, 6, 50
NAMES = ["protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "icl", "leopard"]


class HFHead(nn.Module):
    """A model whose output is a Hugging Face ``ModelOutput`` (read through ``.logits``)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, **x):
        return SequenceClassifierOutput(logits=self.inner(**x))


def make(name: str, kind: str) -> Learner:
    torch.manual_seed(0)
    kw = dict(inner_lr=0.3, inner_steps=2)
    if kind == "tensor":
        if name == "protonet":
            return ProtoNet(mlp([D, 16, 8]))
        if name == "icl":
            return InContextLearner(D, max_way=N, d_model=16, n_heads=2, n_layers=1)
        if name == "leopard":
            return Leopard(mlp([D, 16, 8]), 8, **kw)
        net = mlp([D, 16, N])
        return {"maml": lambda: MAML(net, **kw), "fomaml": lambda: MAML(net, first_order=True, **kw),
                "anil": lambda: ANIL(net, **kw), "metasgd": lambda: MetaSGD(net, **kw),
                "reptile": lambda: Reptile(net, **kw)}[name]()
    bert = tiny_bert(vocab_size=VOCAB, hidden=16, layers=2, heads=2, intermediate=32)
    if name == "protonet":
        return ProtoNet(SentenceEncoder(bert), distance="cosine")
    if name == "icl":
        return InContextLearner(16, max_way=N, d_model=16, n_heads=2, n_layers=1, encoder=SentenceEncoder(bert))
    if name == "anil":
        head = nn.Sequential()
        head.add_module("out", nn.Linear(16, N))
        return ANIL(head, head="out", body=SentenceEncoder(bert), **kw)
    if name == "reptile":
        return Reptile(TextClassifier(bert, N, zero_head=False), **kw)
    body, model = split_top(bert, N, 1, zero_head=False)
    if name == "leopard":  # the top layer adapts; the softmax is generated, split_top's head is unused
        return Leopard(model.encoder, body=body, **kw)
    if name == "maml":
        model = HFHead(model)  # ModelOutput.logits reaches the loss
    cls = MetaSGD if name == "metasgd" else MAML
    return cls(model, body=body, first_order=name == "fomaml", **kw)


def episode(kind: str, b: int = B, seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(N).repeat_interleave(K).expand(b, -1).contiguous()
    qy = torch.arange(N).repeat_interleave(Q).expand(b, -1).contiguous()

    def x(m):
        if kind == "tensor":
            return torch.randn(b, m, D, generator=g)
        ids = torch.randint(1, VOCAB, (b, m, L), generator=g)
        mask = torch.ones(b, m, L, dtype=torch.long)
        mask[..., 4:] = (torch.rand(b, m, 2, generator=g) > 0.5).long()
        return {"input_ids": ids, "attention_mask": mask}
    return Episode(x(N * K), sy, x(N * Q), qy, batched=True)


def _grads(learner):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in learner.parameters()]


@pytest.mark.parametrize("kind", ["tensor", "mapping"])
@pytest.mark.parametrize("name", NAMES)
def test_contract(name, kind):
    learner = make(name, kind)
    ep = episode(kind)
    sx, sy, qx, qy = ep.tensors()
    losses = learner.task_losses(sx, sy, qx, qy)
    assert losses.shape == (B,) and bool(torch.isfinite(losses).all())
    assert losses.requires_grad
    torch.testing.assert_close(learner.meta_loss(sx, sy, qx, qy), losses.mean())
    learner.zero_grad()
    learner.meta_loss(sx, sy, qx, qy).backward()
    ref = _grads(learner)
    assert any(float(g.abs().sum()) > 0 for g in ref)
    learner.zero_grad()
    out = learner.outer_backward(sx, sy, qx, qy, scale=1.0 / B)
    assert out.shape == (B,) and not out.requires_grad
    for a, b in zip(_grads(learner), ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    state = learner.adapt(sx, sy)
    leading = [v.shape[0] for v in (state.values() if isinstance(state, dict) else [state])]
    assert B in leading
    logits = learner.logits(sx, sy, qx)
    assert logits.shape == (B, N * Q, N)
    if name not in ("protonet", "icl"):  # their logits are the training path; adapted ones have no graph
        assert logits.grad_fn is None
    pred = learner.predict(sx, sy, qx)
    assert pred.grad_fn is None
    assert pred.shape == qy.shape and pred.dtype == torch.long
    assert int(pred.min()) >= 0 and int(pred.max()) < N
    res = evaluate(learner.predict, [ep])
    assert res["n"] == B and 0 <= res["mean"] <= 100


def _unbatch(x):
    return {k: v[0] for k, v in x.items()} if isinstance(x, dict) else x[0]


@pytest.mark.parametrize("kind", ["tensor", "mapping"])
@pytest.mark.parametrize("name", NAMES)
def test_contract_refuses_bad_shapes(name, kind):
    learner = make(name, kind)
    sx, sy, qx, qy = episode(kind).tensors()
    one = (_unbatch(sx), sy[0], _unbatch(qx), qy[0])
    for call in (lambda: learner.task_losses(*one), lambda: learner.predict(*one[:3]),
                 lambda: learner.logits(*one[:3]), lambda: learner.adapt(*one[:2])):
        with pytest.raises(ValueError, match="support_x|support_y"):
            call()
    if name != "reptile":  # Reptile's update never reads the queries' labels
        with pytest.raises(ValueError, match="query_y"):
            learner.task_losses(sx, sy, qx, qy[:, :-1])
    two = {k: v[:2] for k, v in qx.items()} if isinstance(qx, dict) else qx[:2]
    with pytest.raises(ValueError, match="query_x"):
        learner.predict(sx, sy, two)
    with pytest.raises(ValueError, match="support_y"):
        learner.logits(sx, sy[:, :-1], qx)
    with pytest.raises(TypeError, match="support_x"):
        learner.task_losses(["a sentence"], sy, qx, qy) if name != "protonet" else learner.task_losses(7, sy, qx, qy)


def test_evaluate_refuses_predictions_of_another_shape():
    ep = episode("tensor")
    with pytest.raises(ValueError, match="query_y has shape"):
        evaluate(lambda sx, sy, qx: torch.zeros(B, N * Q, N), [ep])  # logits, not labels
    with pytest.raises(ValueError, match="query_y has shape"):
        evaluate(lambda sx, sy, qx: torch.zeros(N * Q, dtype=torch.long), [ep])
    single = Episode(ep.support_x[0], ep.support_y[0], ep.query_x[0], ep.query_y[0])
    assert evaluate(ProtoNet().predict, [single])["n"] == 1  # unbatched episodes get a task dim


def _unrolled(model, body, sx, sy, qx, qy, lr, steps):
    """Per-task MAML with plain torch.autograd: the reference for the vmapped meta-gradient."""
    total = 0
    for b in range(sy.shape[0]):
        xs = {k: v[b] for k, v in sx.items()}
        xq = {k: v[b] for k, v in qx.items()}
        hs, hq = (body(**xs), body(**xq)) if body is not None else (xs, xq)
        fast = dict(model.named_parameters())
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, fast, (), hs), sy[b])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
        total = total + F.cross_entropy(functional_call(model, fast, (), hq), qy[b])
    return total / sy.shape[0]


@pytest.mark.parametrize("top", [None, 1])
def test_maml_second_order_through_tiny_bert_equals_unrolled_autograd(top):
    bert = tiny_bert(vocab_size=VOCAB, hidden=16, layers=3, heads=2, intermediate=32).double()
    body, model = split_top(bert, N, top, zero_head=False)
    model.double()
    maml = MAML(model, inner_lr=0.1, inner_steps=2, body=body)
    sx, sy, qx, qy = episode("mapping").tensors()
    params = list(maml.parameters())
    got = torch.autograd.grad(maml.meta_loss(sx, sy, qx, qy), params)
    want = torch.autograd.grad(_unrolled(model, body, sx, sy, qx, qy, 0.1, 2), params)
    assert max(float((a - b).abs().max()) for a, b in zip(got, want)) < 1e-8
    maml.task_chunk = 1  # chunked: the same gradient
    maml.zero_grad()
    maml.outer_backward(sx, sy, qx, qy, scale=1.0 / B)
    assert max(float((p.grad - b).abs().max()) for p, b in zip(params, want)) < 1e-8


def test_anil_runs_the_body_once_per_task_set():
    learner = make("anil", "mapping")
    calls = []
    learner.body.register_forward_hook(lambda *a: calls.append(1))
    learner.inner_steps = 5
    learner.meta_loss(*episode("mapping").tensors())
    assert len(calls) == 2  # support and query, not once per inner step


def test_metasgd_rates_stay_float32():
    learner = MetaSGD(mlp([D, 16, N]).double(), inner_lr=0.1)
    assert all(p.dtype == torch.float32 for p in learner.lrs.values())
    learner.double()
    assert all(p.dtype == torch.float32 for p in learner.lrs.values())
    ep = episode("tensor")
    sx, qx = ep.support_x.double(), ep.query_x.double()
    learner.meta_loss(sx, ep.support_y, qx, ep.query_y).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in learner.lrs.values())


def test_allow_unused_and_separate_outer_loss():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(D, N), nn.Linear(D, N)

        def forward(self, x):
            return self.used(x)
    sx, sy, qx, qy = episode("tensor").tensors()
    with pytest.raises(RuntimeError, match="unused|not have been used"):
        MAML(TwoHeads(), inner_lr=0.1).meta_loss(sx, sy, qx, qy)
    learner = MAML(TwoHeads(), inner_lr=0.1, allow_unused=True)
    assert torch.isfinite(learner.meta_loss(sx, sy, qx, qy))
    smooth = lambda out, y: F.cross_entropy(out, y, label_smoothing=0.2)  # noqa: E731
    a = MAML(mlp([D, 16, N]), inner_lr=0.1)
    b = MAML(a.model, inner_lr=0.1, outer_loss_fn=smooth)
    assert not torch.allclose(a.meta_loss(sx, sy, qx, qy), b.meta_loss(sx, sy, qx, qy))
    fast = a.adapt(sx, sy)
    want = torch.stack([smooth(a.forward_with({n: v[i] for n, v in fast.items()}, qx[i]), qy[i])
                        for i in range(B)]).mean()
    torch.testing.assert_close(b.meta_loss(sx, sy, qx, qy), want)


def test_reptile_surrogate_gradient_is_theta_minus_phi():
    learner = Reptile(mlp([D, 16, N]), inner_lr=0.1, inner_steps=3)
    sx, sy, qx, qy = episode("tensor").tensors()
    phi = learner.adapt(sx, sy)
    learner.meta_loss(sx, sy, qx, qy).backward()
    for n, p in learner.model.named_parameters():
        torch.testing.assert_close(p.grad, (p.detach() - phi[n]).mean(0))


def test_stacked_text_episodes_need_a_collator():
    sentences = Episode(["a", "b"], torch.tensor([0, 1]), ["c", "d"], torch.tensor([0, 1]))
    ep = stack_episodes([sentences, sentences])
    with pytest.raises(TypeError, match="TextCollator"):
        make("maml", "tensor").task_losses(*ep.tensors())
