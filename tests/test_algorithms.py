"""ProtoNet, Reptile and the in-context (model-based) learner."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metabook import InContextLearner, ProtoNet, Reptile, SinusoidTasks, prototypes


def _episode(b=None, n=4, k=3, q=5, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = () if b is None else (b,)
    sx = torch.randn(*shape, n * k, d, generator=g, dtype=torch.float64)
    qx = torch.randn(*shape, n * q, d, generator=g, dtype=torch.float64)
    sy = torch.arange(n).repeat_interleave(k).expand(*shape, n * k)
    qy = torch.arange(n).repeat_interleave(q).expand(*shape, n * q)
    return sx, sy, qx, qy


def test_prototypes_are_class_means():
    sx, sy, _, _ = _episode()
    protos = prototypes(sx, sy)
    for c in range(4):
        torch.testing.assert_close(protos[c], sx[sy == c].mean(0))


def test_protonet_euclidean_is_linear_classifier():
    """Snell et al.: -||x - c||^2 = (2c) . x - ||c||^2 - ||x||^2, so softmax is identical."""
    sx, sy, qx, _ = _episode()
    net = ProtoNet()
    logits = net.logits(sx[None], sy[None], qx[None])[0]
    w, b = ProtoNet.linear_classifier(sx, sy)
    linear = qx @ w.T + b
    torch.testing.assert_close(logits, linear - (qx * qx).sum(-1, keepdim=True))
    torch.testing.assert_close(logits.softmax(-1), linear.softmax(-1))


def test_protonet_batched_equals_per_task_and_cosine():
    sx, sy, qx, qy = _episode(b=3)
    for dist in ("euclidean", "cosine"):
        net = ProtoNet(distance=dist)
        batched = net.logits(sx, sy, qx)
        for i in range(3):
            torch.testing.assert_close(batched[i], net.logits(sx[i:i + 1], sy[i:i + 1], qx[i:i + 1])[0])
        assert net.predict(sx, sy, qx).shape == (3, 20)
    cos = ProtoNet(distance="cosine", scale=1.0).logits(sx, sy, qx)
    assert cos.abs().max() <= 1 + 1e-9


def test_protonet_trains_encoder_and_rejects_bad_input():
    torch.manual_seed(0)
    enc = nn.Linear(6, 4).double()
    net = ProtoNet(enc)
    sx, sy, qx, qy = _episode(b=2)
    net.loss(sx, sy, qx, qy).backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="distance"):
        ProtoNet(distance="manhattan")
    with pytest.raises(ValueError, match="no support example"):
        prototypes(sx[0], sy[0], n_way=5)
    with pytest.raises(TypeError, match="integer"):
        prototypes(sx[0], sy[0].double())


def test_one_reptile_step_is_the_interpolation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    rep = Reptile(model, inner_lr=0.05, inner_steps=4, outer_lr=0.3, loss_fn=F.mse_loss)
    ep = SinusoidTasks(seed=2, dtype=torch.float64).batch(3, 10, 1)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Reference: plain SGD per task with torch.optim, then the interpolation formula.
    phis = []
    for sx, sy in zip(ep.support_x, ep.support_y):
        clone = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        clone.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(clone.parameters(), lr=0.05)
        for _ in range(4):
            opt.zero_grad()
            F.mse_loss(clone(sx), sy).backward()
            opt.step()
        phis.append(dict(clone.named_parameters()))
    rep.meta_step(ep.support_x, ep.support_y)
    for n, p in model.named_parameters():
        mean_phi = torch.stack([phi[n].detach() for phi in phis]).mean(0)
        torch.testing.assert_close(p.detach(), theta[n] + 0.3 * (mean_phi - theta[n]))


def test_reptile_with_outer_lr_one_and_one_task_lands_on_phi():
    torch.manual_seed(1)
    model = nn.Linear(2, 1).double()
    rep = Reptile(model, inner_lr=0.1, inner_steps=3, outer_lr=1.0, loss_fn=F.mse_loss)
    x = torch.randn(1, 8, 2, dtype=torch.float64)
    y = x.sum(-1, keepdim=True)
    phi = {n: v[0] for n, v in rep.adapt(x, y).items()}
    rep.meta_step(x, y)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), phi[n])
    with pytest.raises(ValueError, match="outer_lr"):
        Reptile(model, outer_lr=0.0)


def test_in_context_learner_shapes_masking_and_learning():
    torch.manual_seed(0)
    icl = InContextLearner(in_dim=6, max_way=4, d_model=32, n_heads=2, n_layers=1).double()
    sx, sy, qx, qy = _episode(b=2)
    lg = icl.logits(sx, sy, qx)
    assert lg.shape == (2, 20, 4)
    # Queries never see each other: changing one query leaves the others unchanged.
    qx2 = qx.clone()
    qx2[:, 0] += 10
    lg2 = icl.logits(sx, sy, qx2)
    torch.testing.assert_close(lg[:, 1:], lg2[:, 1:])
    # Swapping the support set changes predictions (it reads the support set).
    assert not torch.allclose(lg, icl.logits(sx.flip(1), sy, qx))
    with pytest.raises(ValueError, match="max_way"):
        InContextLearner(in_dim=6, max_way=2).double().logits(sx, sy, qx)


def test_in_context_learner_learns_to_classify_in_context():
    """Gaussian-cluster tasks with random class means: it must read the support set."""
    torch.manual_seed(0)
    icl = InContextLearner(in_dim=8, max_way=3, d_model=32, n_heads=2, n_layers=2)
    opt = torch.optim.Adam(icl.parameters(), 3e-3)

    def tasks(b):
        means = torch.randn(b, 3, 8) * 2
        sy = torch.arange(3).repeat_interleave(2).expand(b, 6)
        qy = torch.arange(3).repeat_interleave(4).expand(b, 12)
        sx = means.gather(1, sy[..., None].expand(-1, -1, 8)) + 0.3 * torch.randn(b, 6, 8)
        qx = means.gather(1, qy[..., None].expand(-1, -1, 8)) + 0.3 * torch.randn(b, 12, 8)
        return sx, sy, qx, qy

    for _ in range(300):
        loss = icl.loss(*tasks(32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sx, sy, qx, qy = tasks(200)
    acc = (icl.predict(sx, sy, qx) == qy).double().mean().item()
    assert acc > 0.9, acc
