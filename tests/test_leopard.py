"""LEOPARD: the generated softmax by hand, the meta-gradient against finite differences, zero inner
steps, determinism, bad labels, the per-layer rates, and a few steps through the trainer.

The protocol contract (shapes, ``outer_backward``, refusals) is in ``tests/test_learners.py``.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import cli_flags
from torch import nn

from metabook import Leopard, mlp
from metabook.algorithms.leopard import layer_group
from metabook.bert import split_top, tiny_bert
from metabook.train import TrainConfig, build_learner, load_checkpoint, parse_args
from metabook.train.__main__ import main

B, N, K, Q, D = 3, 3, 2, 2, 6


def episode(dtype=torch.float32, seed=0, d=D):
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(N).repeat_interleave(K).expand(B, -1).contiguous()
    qy = torch.arange(N).repeat(Q).expand(B, -1).contiguous()
    return (torch.randn(B, N * K, d, generator=g, dtype=dtype), sy,
            torch.randn(B, N * Q, d, generator=g, dtype=dtype), qy)


def small(inner_steps=2, head=False, body=False, seed=0, **kw) -> Leopard:
    torch.manual_seed(seed)
    return Leopard(mlp([D, 8, 5]), 5, inner_lr=0.3, inner_steps=inner_steps,
                   head=nn.Sequential(nn.Linear(5, 4), nn.Tanh()) if head else None, head_dim=4 if head else None,
                   body=nn.Linear(D, D) if body else None, **kw)


def by_hand(learner: Leopard, sx, sy):
    """Class means of g(f(x)) for every task: W (B, N, D'), b (B, N)."""
    f = learner.encoder((learner.body(sx) if learner.body is not None else sx))
    out = learner.generator(f)
    rows = torch.stack([torch.stack([out[t][sy[t] == c].mean(0) for c in range(N)]) for t in range(B)])
    return rows[..., :-1], rows[..., -1]


@pytest.mark.parametrize("head", [False, True])
def test_generated_softmax_at_zero_steps_is_the_class_mean_of_the_generator(head):
    learner = small(head=head, body=head)
    sx, sy, qx, qy = episode()
    w, b = by_hand(learner, sx, sy)
    fast = learner.adapt(sx, sy, steps=0)
    torch.testing.assert_close(fast["softmax.weight"], w)
    torch.testing.assert_close(fast["softmax.bias"], b)
    gw, gb = learner.generate(sx, sy)
    torch.testing.assert_close(gw, w)
    torch.testing.assert_close(gb, b)
    assert gw.requires_grad and fast["softmax.weight"].shape == (B, N, 4 if head else 5)
    for name, p in learner.encoder.named_parameters():  # nothing adapted at zero steps
        torch.testing.assert_close(fast[f"encoder.{name}"], p.detach().expand(B, *p.shape))
    fast = learner.adapt(sx, sy)  # two steps: the softmax and the encoder moved
    assert not torch.allclose(fast["softmax.weight"], w)
    assert not torch.allclose(fast["encoder.0.weight"][0], learner.encoder[0].weight)


def test_generated_softmax_through_a_tiny_bert():
    bert = tiny_bert(vocab_size=50, hidden=16, layers=2, heads=2, intermediate=32)
    body, model = split_top(bert, N, 1)
    learner = Leopard(model.encoder, body=body, inner_lr=0.3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (B, N * K, 5), generator=g)
    sx = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sy = episode()[1]
    with torch.no_grad():
        f = learner.encoder(**body(**{k: v.flatten(0, 1) for k, v in sx.items()})).unflatten(0, (B, -1))
        out = learner.generator(f)
    want = torch.stack([torch.stack([out[t][sy[t] == c].mean(0) for c in range(N)]) for t in range(B)])
    fast = learner.adapt(sx, sy, steps=0)
    torch.testing.assert_close(fast["softmax.weight"], want[..., :-1])
    torch.testing.assert_close(fast["softmax.bias"], want[..., -1])
    assert set(learner.lrs) == {"encoder__slice__layers__0", "softmax"}


@pytest.mark.parametrize("head", [False, True])
def test_zero_inner_steps_is_the_generated_classifier(head):
    learner = small(inner_steps=0, head=head)
    sx, sy, qx, qy = episode()
    w, b = by_hand(learner, sx, sy)
    h = learner.encoder(qx)
    h = learner.head(h) if head else h
    lg = h @ w.transpose(1, 2) + b.unsqueeze(1)
    want = F.cross_entropy(lg.transpose(1, 2), qy, reduction="none").mean(1)
    losses = learner.task_losses(sx, sy, qx, qy)
    torch.testing.assert_close(losses, want)
    torch.testing.assert_close(learner.logits(sx, sy, qx), lg.detach())
    losses.sum().backward()
    assert all(p.grad is None for p in learner.lrs.values())  # no step, no rate
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in learner.generator.parameters())


def test_meta_gradient_matches_finite_differences_in_float64():
    learner = small(inner_steps=2, head=True, body=True).double()
    for i, p in enumerate(learner.lrs.values()):  # distinct rates, in float64 for the differences
        p.data = torch.tensor(0.2 + 0.15 * i, dtype=torch.float64)
    sx, sy, qx, qy = episode(torch.float64)
    params = dict(learner.named_parameters())
    assert {"lrs.encoder__0", "lrs.encoder__2", "lrs.head__0", "lrs.softmax"} <= set(params)
    grads = torch.autograd.grad(learner.meta_loss(sx, sy, qx, qy), list(params.values()))
    gen, eps = torch.Generator().manual_seed(1), 1e-6
    with torch.no_grad():  # a random direction per tensor: <grad, v> against a central difference
        for (name, p), g in zip(params.items(), grads):
            v = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p += eps * v
            up = float(learner.meta_loss(sx, sy, qx, qy))
            p -= 2 * eps * v
            down = float(learner.meta_loss(sx, sy, qx, qy))
            p += eps * v
            fd, want = (up - down) / (2 * eps), float((g * v).sum())
            assert abs(fd - want) < 1e-8 + 1e-6 * abs(fd), (name, fd, want)
    assert all(float(g.abs().sum()) > 0 for n, g in zip(params, grads) if n.startswith(("lrs.", "generator.")))


def test_first_order_drops_only_the_second_order_terms():
    so, fo = small(), small(first_order=True)
    sx, sy, qx, qy = episode()
    torch.testing.assert_close(so.task_losses(sx, sy, qx, qy), fo.task_losses(sx, sy, qx, qy))
    g_so = torch.autograd.grad(so.meta_loss(sx, sy, qx, qy), list(so.generator.parameters()))
    g_fo = torch.autograd.grad(fo.meta_loss(sx, sy, qx, qy), list(fo.generator.parameters()))
    assert all(torch.isfinite(g).all() for g in g_fo)
    assert not all(torch.allclose(a, b) for a, b in zip(g_so, g_fo))
    fo.meta_loss(sx, sy, qx, qy).backward()
    assert all(p.grad is not None and float(p.grad.abs()) > 0 for p in fo.lrs.values())


def test_deterministic_for_a_fixed_seed():
    sx, sy, qx, qy = episode()
    runs = []
    for _ in range(2):
        learner = small(seed=3, head=True)
        loss = learner.meta_loss(sx, sy, qx, qy)
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in learner.parameters()], learner.predict(sx, sy, qx)))
    (l1, g1, p1), (l2, g2, p2) = runs
    assert torch.equal(l1, l2) and torch.equal(p1, p2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert not torch.equal(small(seed=4).meta_loss(sx, sy, qx, qy), small(seed=3).meta_loss(sx, sy, qx, qy))


def test_bad_labels_and_arguments_raise():
    learner = small()
    sx, sy, qx, qy = episode()
    gap = sy.clone()
    gap[1][gap[1] == 2] = 0  # task 1 has no example of class 2
    for call in (lambda: learner.task_losses(sx, gap, qx, qy), lambda: learner.predict(sx, gap, qx),
                 lambda: learner.adapt(sx, gap), lambda: learner.generate(sx, gap)):
        with pytest.raises(ValueError, match="class 2 has no support example in task 1"):
            call()
    with pytest.raises(ValueError, match="support_y"):
        learner.task_losses(sx, sy[:, :-1], qx, qy)  # mismatched support labels
    with pytest.raises(ValueError, match="query_y"):
        learner.task_losses(sx, sy, qx, qy[:, :-1])
    with pytest.raises(ValueError, match=r"query_y has labels outside 0\.\.2"):
        learner.task_losses(sx, sy, qx, qy + 1)
    with pytest.raises(ValueError, match="label -1"):
        learner.adapt(sx, sy - 1)
    with pytest.raises(TypeError, match="integer"):
        learner.adapt(sx, sy.float())
    with pytest.raises(ValueError, match="support_x"):
        learner.adapt(sx[0], sy[0])
    with pytest.raises(ValueError, match="dim="):
        Leopard(mlp([D, 5]))
    with pytest.raises(ValueError, match="head_dim="):
        Leopard(mlp([D, 5]), 5, head=nn.Linear(5, 4))
    with pytest.raises(ValueError, match="inner_steps"):
        Leopard(mlp([D, 5]), 5, inner_steps=-1)
    with pytest.raises(ValueError, match="track_running_stats"):
        Leopard(nn.Sequential(nn.Linear(D, 5), nn.BatchNorm1d(5)), 5)


def test_rates_are_one_per_layer_and_stay_float32():
    bert = tiny_bert(vocab_size=50, hidden=16, layers=3, heads=2, intermediate=32)
    body, model = split_top(bert, N, 2)
    learner = Leopard(model.encoder, body=body, inner_lr=0.5).double()
    assert set(learner.lrs) == {"encoder__slice__layers__0", "encoder__slice__layers__1", "softmax"}
    assert all(p.dtype == torch.float32 and float(p.detach()) == 0.5 for p in learner.lrs.values())
    assert learner.generator[0].weight.dtype == torch.float64
    assert layer_group("encoder.slice.layers.1.attention.self.query.weight") == "encoder.slice.layers.1"
    assert layer_group("softmax.bias") == "softmax" and layer_group("head.proj.weight") == "head.proj"
    custom = Leopard(mlp([D, 8, 5]), 5, group=lambda n: n.split(".")[0])  # one rate per module
    assert set(custom.lrs) == {"encoder", "softmax"}


TEXT = dict(task="intents", data="banking77", split="01", encoder="tiny", n_way=3, k_shot=2, n_query=2,
            meta_batch=2, inner_steps=1, max_length=16, progress=False, tensorboard=False, device="cpu",
            threads=1, adapt="top1")


def test_trainer_meta_trains_leopard_on_intents(tmp_path, shared_data):
    out = tmp_path / "run"
    assert main(cli_flags({"algorithm": "leopard", "steps": 2, "val_every": 2, "val_episodes": 2,
                           "meta_lr": 1e-3, "out": str(out), **TEXT})) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in lines if "loss" in x)
    assert (out / "encoder" / "metabook.json").is_file()
    cfg = parse_args(cli_flags({"algorithm": "leopard", **TEXT})).resolved()
    fresh = build_learner(cfg)
    assert isinstance(fresh, Leopard) and set(fresh.lrs) == {"encoder__slice__layers__0", "softmax"}
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    load_checkpoint(out / "checkpoints", fresh, None, model_config=cfg.model_config(), restore_rng=False)
    after = fresh.state_dict()
    assert not torch.equal(after["lrs.softmax"], before["lrs.softmax"])  # the rates were meta-learned
    assert not before["generator.2.weight"].any()  # the trainer's generator starts at a zero softmax
    assert after["generator.2.weight"].any()
    with pytest.raises(ValueError, match="classifies"):
        TrainConfig(algorithm="leopard").validate()
    with pytest.raises(ValueError, match="not lora"):
        TrainConfig(algorithm="leopard", task="intents", adapt="lora").validate()
