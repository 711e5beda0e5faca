"""MAML / FOMAML / ANIL / Meta-SGD: meta-gradients against finite differences and unrolled autograd."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metabook import MAML, ANIL, MetaSGD, SinusoidTasks, sinusoid_mlp


def _tasks(dtype=torch.float64, b=3, k=5):
    return SinusoidTasks(seed=1, dtype=dtype).batch(b, k, 7, index=0)


def _model(seed=0, dtype=torch.float64, hidden=8):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return m.to(dtype)


def unrolled_meta_loss(model, ep, lr, steps, first_order=False, adapt=None, lrs=None):
    """The textbook loop: torch.autograd.grad(create_graph=True), one task at a time."""
    names = [n for n, _ in model.named_parameters()]
    adapt = names if adapt is None else adapt
    losses = []
    for sx, sy, qx, qy in zip(*ep.tensors()):
        fast = dict(model.named_parameters())
        for _ in range(steps):
            loss = F.mse_loss(torch.func.functional_call(model, fast, (sx,)), sy)
            gs = torch.autograd.grad(loss, [fast[n] for n in adapt], create_graph=not first_order)
            for n, g in zip(adapt, gs):
                step = (lrs[n] if lrs is not None else lr) * g
                fast[n] = fast[n] - step
        losses.append(F.mse_loss(torch.func.functional_call(model, fast, (qx,)), qy))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_finite_differences(steps):
    model, ep = _model(), _tasks()
    maml = MAML(model, inner_lr=0.05, inner_steps=steps, loss_fn=F.mse_loss)
    params = list(model.parameters())
    grads = torch.autograd.grad(maml.meta_loss(*ep.tensors()), params)
    flat = torch.cat([g.reshape(-1) for g in grads])
    eps, fd = 1e-6, []
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = maml.meta_loss(*ep.tensors()).item()
                p.view(-1)[i] = old - eps
                down = maml.meta_loss(*ep.tensors()).item()
                p.view(-1)[i] = old
                fd.append((up - down) / (2 * eps))
    fd = torch.tensor(fd, dtype=torch.float64)
    rel = (flat - fd).norm() / fd.norm()
    assert rel < 1e-4, rel


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_unrolled_loop(first_order):
    model, ep = _model(), _tasks()
    maml = MAML(model, inner_lr=0.05, inner_steps=3, first_order=first_order, loss_fn=F.mse_loss)
    ours = torch.autograd.grad(maml.meta_loss(*ep.tensors()), list(model.parameters()))
    ref = torch.autograd.grad(unrolled_meta_loss(model, ep, 0.05, 3, first_order), list(model.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fomaml_is_maml_without_hessian_terms():
    """FOMAML's gradient is the query gradient at the adapted weights, d L_q / d phi."""
    model, ep = _model(), _tasks(b=1)
    fo = MAML(model, inner_lr=0.05, inner_steps=2, first_order=True, loss_fn=F.mse_loss)
    so = MAML(model, inner_lr=0.05, inner_steps=2, first_order=False, loss_fn=F.mse_loss)
    sx, sy, qx, qy = (t[0] for t in ep.tensors())
    phi = {k: v.detach().requires_grad_() for k, v in fo.adapt_task(fo.params(), sx, sy).items()}
    g_phi = torch.autograd.grad(F.mse_loss(torch.func.functional_call(model, phi, (qx,)), qy), list(phi.values()))
    g_fo = torch.autograd.grad(fo.meta_loss(*ep.tensors()), list(model.parameters()))
    g_so = torch.autograd.grad(so.meta_loss(*ep.tensors()), list(model.parameters()))
    for a, b in zip(g_fo, g_phi):
        torch.testing.assert_close(a, b)
    # Second order differs by the Hessian terms, which are not zero here.
    assert max((a - b).abs().max() for a, b in zip(g_fo, g_so)) > 1e-6


def test_one_step_maml_gradient_formula():
    """(I - alpha H_s) grad L_q(phi) for one inner step, with H_s from autograd."""
    model, ep = _model(hidden=4), _tasks(b=1)
    alpha = 0.1
    maml = MAML(model, inner_lr=alpha, inner_steps=1, loss_fn=F.mse_loss)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            out[n] = v[i:i + s.numel()].reshape(s)
            i += s.numel()
        return out

    sx, sy, qx, qy = (t[0] for t in ep.tensors())
    ls = lambda v: F.mse_loss(torch.func.functional_call(model, unflat(v), (sx,)), sy)
    lq = lambda v: F.mse_loss(torch.func.functional_call(model, unflat(v), (qx,)), qy)
    phi = theta - alpha * torch.func.grad(ls)(theta)
    expected = (torch.eye(len(theta), dtype=theta.dtype) - alpha * torch.func.hessian(ls)(theta)) @ torch.func.grad(lq)(phi)
    got = torch.cat([g.reshape(-1) for g in torch.autograd.grad(maml.meta_loss(*ep.tensors()), list(model.parameters()))])
    torch.testing.assert_close(got, expected)


def test_anil_adapts_only_the_head():
    model, ep = _model(), _tasks()
    anil = ANIL(model, inner_lr=0.05, inner_steps=2, loss_fn=F.mse_loss)
    assert anil.adapt_names == ["4.weight", "4.bias"]
    fast = anil.adapt(ep.support_x, ep.support_y)
    for n, p in model.named_parameters():
        for i in range(len(ep.support_x)):
            same = torch.equal(fast[n][i], p)
            assert same == (not n.startswith("4.")), (n, i)
    ours = torch.autograd.grad(anil.meta_loss(*ep.tensors()), list(model.parameters()))
    ref = torch.autograd.grad(unrolled_meta_loss(model, ep, 0.05, 2, adapt=["4.weight", "4.bias"]),
                              list(model.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    assert ours[0].abs().sum() > 0, "the body still gets an outer gradient in ANIL"


def test_metasgd_learns_learning_rates():
    model, ep = _model(), _tasks()
    msgd = MetaSGD(model, inner_lr=0.05, inner_steps=2, loss_fn=F.mse_loss)
    with torch.no_grad():
        for p in msgd.lrs.values():
            p.uniform_(0.01, 0.1)
    lrs = {n: msgd._lr(n) for n in msgd.adapt_names}
    params = list(msgd.parameters())
    assert len(params) == 2 * len(list(model.parameters()))
    ours = torch.autograd.grad(msgd.meta_loss(*ep.tensors()), params)
    ref = torch.autograd.grad(unrolled_meta_loss(model, ep, None, 2, lrs=lrs), params)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_maml_trains_sinusoid_in_float32():
    torch.manual_seed(0)
    model = sinusoid_mlp()
    maml = MAML(model, inner_lr=0.01, inner_steps=1, loss_fn=F.mse_loss)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    tasks = SinusoidTasks(seed=0)
    test = tasks.batch(100, 10, 10, index=10**6)
    before = maml.meta_loss(*test.tensors()).item()
    for step in range(400):
        loss = maml.meta_loss(*tasks.batch(10, 10, 10, index=step).tensors())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert maml.meta_loss(*test.tensors()).item() < 0.5 * before


def test_classification_predict_and_dropout_under_vmap():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    maml = MAML(model, inner_lr=0.1, inner_steps=2)
    sx, qx = torch.randn(4, 6, 6), torch.randn(4, 9, 6)
    sy, qy = torch.arange(3).repeat(2).expand(4, 6), torch.arange(3).repeat(3).expand(4, 9)
    loss = maml.meta_loss(sx, sy, qx, qy)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert maml.outputs(sx, sy, qx).shape == (4, 9, 3)
    assert maml.predict(sx, sy, qx).shape == (4, 9)


def test_batchnorm_with_running_stats_is_refused():
    bad = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        MAML(bad)
    good = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    maml = MAML(good, inner_lr=0.1)
    sx, sy = torch.randn(2, 6, 2), torch.tensor([0, 1] * 3).expand(2, 6)
    maml.meta_loss(sx, sy, sx, sy).backward()


def test_bad_arguments():
    m = _model()
    with pytest.raises(ValueError, match="inner_steps"):
        MAML(m, inner_steps=-1)
    with pytest.raises(ValueError, match="unknown parameters"):
        MAML(m, adapt=["nope.weight"])
    maml = MAML(m, loss_fn=F.mse_loss)
    x = torch.randn(3, 5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="query_x has 2 tasks but support_x has 3"):
        maml.meta_loss(x, x, x[:2], x[:2])
    with pytest.raises(ValueError, match="support_x has shape .*leading task dimension"):
        maml.meta_loss(x[0], x[0], x[0], x[0])


@pytest.mark.parametrize("cls, kw", [(MAML, {}), (MAML, {"first_order": True}), (ANIL, {}), (MetaSGD, {})])
def test_batched_meta_loss_equals_vmap_of_single_task_path(cls, kw):
    """meta_loss (batched autograd inner loop) == mean over tasks of the adapt_task path (torch.func.grad)."""
    model, ep = _model(), _tasks(b=4)
    learner = cls(model, inner_lr=0.05, inner_steps=3, loss_fn=F.mse_loss, **kw)
    params = [p for p in learner.parameters()]
    fast = torch.autograd.grad(learner.meta_loss(*ep.tensors()), params)
    ref_loss = torch.stack([learner.inner_loss(learner.adapt_task(learner.params(), sx, sy), qx, qy)
                            for sx, sy, qx, qy in zip(*ep.tensors())]).mean()
    ref = torch.autograd.grad(ref_loss, params)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b)
    batch = learner.adapt(ep.support_x, ep.support_y)
    one = learner.adapt_task(learner.params(), ep.support_x[2], ep.support_y[2])
    for n in one:
        torch.testing.assert_close(batch[n][2], one[n])
