"""metabook.book.mathplots: Chapter 4's helpers (flat vectors, checks, curvature, memory)."""
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, hessian

from metabook import ANIL, MAML, SinusoidTasks, mlp, seed_everything, sinusoid_mlp
from metabook.book import mathplots as mp

matplotlib.use("Agg")


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    net = mlp([1, 4, 1], activation=nn.Tanh).double()
    ep = SinusoidTasks(seed=0, dtype=torch.float64).batch(1, 6, 6, index=0)
    return net, ep


def test_flat_view_round_trip_and_loss(tiny):
    net, ep = tiny
    fv = mp.FlatView(net)
    theta = fv.vector()
    assert theta.numel() == sum(p.numel() for p in net.parameters()) == 13
    back = fv.unflat(theta)
    assert all(torch.equal(back[n], p) for n, p in net.named_parameters())
    x, y = ep.support_x[0], ep.support_y[0]
    assert torch.allclose(fv.loss(theta, x, y), F.mse_loss(net(x), y))
    with pytest.raises(ValueError, match="13"):
        fv.unflat(theta[:-1])


def test_grad_vector_and_finite_differences_agree_with_autograd(tiny):
    net, ep = tiny
    x, y = ep.support_x[0], ep.support_y[0]
    loss = lambda: F.mse_loss(net(x), y)  # noqa: E731
    g = mp.grad_vector(loss(), net.parameters())
    fv = mp.FlatView(net)
    assert torch.allclose(g, grad(lambda v: fv.loss(v, x, y))(fv.vector().detach()))
    before = nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    fd = mp.finite_differences(loss, net)
    assert ((fd - g).norm() / g.norm()).item() < 1e-7
    assert torch.equal(nn.utils.parameters_to_vector(net.parameters()), before)  # restored


def test_formula_checks_record_pass_and_fail(capsys):
    checks = mp.FormulaChecks()
    want = torch.tensor([1.0, 2.0], dtype=torch.float64)
    checks.compare("(eq)", "close", want * (1 + 1e-14), want, 1e-12)
    assert len(checks) == 1 and checks.last < 1e-12
    assert "relative error" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not below"):
        checks.compare("(eq)", "far", want * 1.1, want, 1e-3)
    with pytest.raises(AssertionError, match="not below"):
        checks.add("(eq)", "nan", float("nan"), 1.0)
    with pytest.raises(AssertionError, match="shapes"):
        checks.compare("(eq)", "shape", want[:1], want, 1.0)
    assert checks.worst() == math.inf  # the failed checks are recorded too, NaN included
    table = checks.table()
    assert table.splitlines()[1] == "|---|---|---:|---:|" and len(table.splitlines()) == 2 + 3


def test_formula_checks_last_needs_a_check():
    with pytest.raises(IndexError):
        mp.FormulaChecks().last


def test_markdown_table_and_small_helpers():
    t = mp.markdown_table(["a", "b"], [[1, "x|y"], [2, "z"]], align="rl")
    assert t.splitlines()[:2] == ["| a | b |", "|---:|---|"]
    with pytest.raises(ValueError, match="columns"):
        mp.markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="letters"):
        mp.markdown_table(["a"], [[1]], align="lr")
    assert mp.halving_ratios([8.0, 4.0, 1.0]) == [2.0, 4.0]
    slope, intercept, resid = mp.linear_fit([1, 2, 4, 8], [5, 7, 11, 19])
    assert math.isclose(slope, 2) and math.isclose(intercept, 3) and resid < 1e-12
    assert mp.linear_fit([1, 2, 3], [1, 4, 9])[2] > 0.05


def test_compare_adaptations_counts_changed_tensors():
    seed_everything(0)
    body = sinusoid_mlp()
    task = SinusoidTasks(seed=3).batch(1, 10, 20, index=0)
    out = mp.compare_adaptations({"MAML": MAML(body, 0.01, 2, loss_fn=F.mse_loss),
                                  "ANIL": ANIL(body, 0.01, 2, loss_fn=F.mse_loss),
                                  "still": MAML(body, 0.0, 2, loss_fn=F.mse_loss)}, body, task)
    got = {a.name: a for a in out}
    assert got["MAML"].changed == got["MAML"].tensors == 6
    assert got["ANIL"].changed == 2
    assert got["still"].distance == 0 and got["still"].loss_after == got["still"].loss_before
    assert got["MAML"].loss_after < got["MAML"].loss_before


def test_train_maml_and_joint_is_deterministic_and_tracks():
    calls = []

    def hook(model):
        calls.append(model)
        return float(len(calls))

    a = mp.train_maml_and_joint(4, 2, 1e-2, eval_fn=hook, eval_every=2)
    b = mp.train_maml_and_joint(4, 2, 1e-2)
    for m, n in ((a.maml, b.maml), (a.joint, b.joint)):
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), n.parameters()))
    assert len(a.log_maml.losses) == len(a.log_joint.losses) == 4
    assert a.log_maml.evals == [(0, 1.0), (2, 2.0), (4, 3.0)]
    assert all(m is a.maml for m in calls)
    assert not all(torch.equal(p, q) for p, q in zip(a.maml.parameters(), a.joint.parameters()))
    assert set(mp.SINUSOID_PAIR_SIZES) == {"cpu", "gpu"}


def test_curvature_measures_match_explicit_hessians():
    seed_everything(1)
    model = mlp([1, 5, 1], activation=nn.Tanh)
    episodes = SinusoidTasks(seed=2).batch(3, 8, 8, index=0)
    fv = mp.FlatView(model)
    theta = fv.vector().detach()
    want = []
    for t in range(3):
        x, y = episodes.support_x[t], episodes.support_y[t]
        g = grad(lambda v: fv.loss(v, x, y))(theta)
        H = hessian(lambda v: fv.loss(v, x, y))(theta)
        want.append(0.1 * (g @ H @ g / (g @ g)).item())
    np.testing.assert_allclose(mp.alpha_r(model, episodes, 0.1), want, rtol=1e-4)
    spec = mp.support_spectrum(model, episodes)
    H0 = hessian(lambda v: fv.loss(v, episodes.support_x[0], episodes.support_y[0]))(theta)
    assert spec.shape == (theta.numel(),) and torch.all(spec[1:] >= spec[:-1])
    torch.testing.assert_close(spec, torch.linalg.eigvalsh(H0.double()), rtol=1e-4, atol=1e-5)


def test_fo_cosine_is_one_without_inner_step_and_below_one_with_it():
    seed_everything(0)
    model = sinusoid_mlp()
    episodes = SinusoidTasks(seed=1).batch(5, 10, 10, index=0)
    assert mp.fo_cosine(model, episodes, 0.0) == pytest.approx(1.0, abs=1e-6)
    assert mp.fo_cosine(model, episodes, 0.05) < 1 - 1e-6


def test_features():
    texts = ["a b b", "c", "a c c c"]
    x = mp.count_features(texts)
    assert x.dtype == torch.float64 and x.tolist() == [[1, 2, 0], [0, 0, 1], [1, 0, 3]]
    t = mp.tfidf_features(texts)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert t[0, 1] > t[0, 0]  # "b": twice in its sentence and rarer than "a"


def test_saved_bytes_and_memory_grow_with_steps_only_for_second_order():
    w = torch.ones(1000, requires_grad=True)
    x = torch.randn(1000)
    assert mp.saved_tensor_bytes((w * x).sum()) >= 4000  # x is saved for backward
    batch = SinusoidTasks(seed=0).batch(4, 5, 5, index=0)
    mem = mp.maml_memory(sinusoid_mlp(), batch, (1, 2, 3), repeats=1)
    so = [mem[S, False][0] for S in (1, 2, 3)]
    fo = [mem[S, True][0] for S in (1, 2, 3)]
    assert so[0] < so[1] < so[2] and len(set(fo)) == 1 and fo[0] < so[0]
    assert mp.linear_fit([1, 2, 3], so)[2] < 0.01
    assert all(t > 0 for _, t in mem.values())


def test_plots_draw():
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 4)
    a = np.logspace(-3, -1, 5)
    mp.plot_fo_error(axs[0], a, a, 1.3 * a, 1.0, 0.0)
    mp.plot_curvature(axs[1], {"x": np.array([0.1, 0.2]), "y": np.array([1.0, 1.5])})
    mp.plot_factor_track(axs[2], [0, 1], np.array([-1.0, -2.0]), np.array([20.0, 100.0]),
                         np.array([0.2, 1.0]), 0.01)
    mp.plot_cosines(axs[3], {"a": 0.9, "b": 0.5})
    assert len(axs[0].lines) == 3 and len(axs[3].patches) == 2
    assert len(axs[2].get_legend().get_texts()) == 3
    plt.close(fig)
