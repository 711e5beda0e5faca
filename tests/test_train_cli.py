"""`python -m metabook.train`: configuration, every algorithm, the outer step, non-finite guards."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from metabook import MAML, SinusoidTasks, sinusoid_mlp
from metabook.train import (NonFiniteLossError, TrainConfig, build_learner, build_optimizer, load_checkpoint,
                            meta_step, meta_train, parse_args, run, task_losses)
from metabook.train.__main__ import main

TINY = dict(steps=4, meta_batch=3, k_shot=5, n_query=5, hidden=8, progress=False, threads=1, device="cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_yaml_config_with_argument_overrides(tmp_path):
    (tmp_path / "run.yaml").write_text("algorithm: metasgd\nsteps: 7\nmeta-batch: 3\ninner_lr: 0.05\n"
                                       "progress: false\n")
    cfg = parse_args(["--config", str(tmp_path / "run.yaml"), "--steps", "9", "--out", "x"])
    assert (cfg.algorithm, cfg.steps, cfg.meta_batch, cfg.inner_lr, cfg.progress, cfg.out) == (
        "metasgd", 9, 3, 0.05, False, "x")
    assert cfg.hidden == 40 and cfg.resolved().optimizer == "adam"
    assert TrainConfig(algorithm="reptile").resolved().optimizer == "sgd"
    (tmp_path / "bad.yaml").write_text("algoritm: maml\n")
    with pytest.raises(ValueError, match="unknown option 'algoritm'"):
        parse_args(["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ValueError, match="algorithm must be one of"):
        parse_args(["--algorithm", "sgd"])
    with pytest.raises(SystemExit):
        parse_args(["--steps", "two"])


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "metasgd", "reptile"])
def test_every_algorithm_trains_logs_and_checkpoints(tmp_path, algorithm):
    res = run(TrainConfig(algorithm=algorithm, out=str(tmp_path), checkpoint_every=2, **TINY))
    assert res.step == 4 and len(res.losses) == 4 and all(math.isfinite(v) for v in res.losses)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and {"loss", "grad_norm", "lr"} <= set(lines[0])
    assert res.checkpoint.name == "step_00000004.json"
    cfg = TrainConfig(algorithm=algorithm, **TINY).resolved()
    fresh = build_learner(cfg)
    load_checkpoint(res.checkpoint, fresh, build_optimizer(cfg, fresh), model_config=cfg.model_config())
    for (k, a), b in zip(fresh.state_dict().items(), res.learner.state_dict().values()):
        assert torch.equal(a, b), k
    if algorithm == "metasgd":  # the inner learning rates were learned and saved
        assert not torch.allclose(fresh.lrs["0__weight"], torch.full_like(fresh.lrs["0__weight"], 0.01))


def test_meta_step_is_the_meta_loss_gradient_and_reptile_is_reptile():
    ep = SinusoidTasks(dtype=torch.float64).batch(4, 5, 5, index=0)
    torch.manual_seed(0)
    maml = MAML(sinusoid_mlp(8).double(), inner_lr=0.05, inner_steps=2, loss_fn=F.mse_loss)
    ref = copy.deepcopy(maml)
    sgd = torch.optim.SGD(maml.parameters(), lr=0.1)
    res = meta_step(maml, sgd, ep, step=0)
    loss = ref.meta_loss(*ep.tensors())
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    assert torch.allclose(task_losses(ref, *ep.tensors()).mean(), loss)
    loss.backward()
    with torch.no_grad():
        for p, q in zip(maml.parameters(), ref.parameters()):
            assert torch.allclose(p, q - 0.1 * q.grad, atol=1e-12)

    cfg = TrainConfig(algorithm="reptile", hidden=8, dtype="float64", inner_steps=3, inner_lr=0.02,
                      meta_lr=0.3).resolved()
    reptile = build_learner(cfg)
    ref = copy.deepcopy(reptile)
    ref.outer_lr = 0.3
    meta_step(reptile, build_optimizer(cfg, reptile), ep, step=0)  # SGD(lr=eps) on theta - mean(phi)
    ref.meta_step(ep.support_x, ep.support_y)
    for p, q in zip(reptile.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-14)


def _nan_task(steps, task=2):
    def transform(step, ep):
        if step in steps:
            ep.support_y[task] = float("nan")
        return ep
    return transform


def test_nonfinite_loss_raises_naming_step_and_task(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 3: task 2 \(loss=nan, task=\(") as err:
        run(TrainConfig(out=str(tmp_path), **{**TINY, "steps": 6}), transform_batch=_nan_task({3}))
    assert err.value.step == 3 and err.value.tasks == [2]
    # The legacy loop names the task too when loss_fn returns per-task losses.
    maml = MAML(sinusoid_mlp(8), inner_lr=0.01, loss_fn=F.mse_loss)
    tasks = SinusoidTasks()
    batches = (_nan_task({1}, task=1)(i, tasks.batch(3, 5, 5, index=i)) for i in range(5))
    with pytest.raises(NonFiniteLossError, match="step 1: task 1"):
        meta_train(lambda ep: task_losses(maml, *ep.tensors()), batches,
                   torch.optim.Adam(maml.parameters()), 3, progress=False)


def test_nonfinite_skip_policy_counts_skips_and_stops_after_max(tmp_path):
    res = run(TrainConfig(out=str(tmp_path / "a"), on_nonfinite="skip", checkpoint_every=1,
                          keep_checkpoints=0, **{**TINY, "steps": 6}), transform_batch=_nan_task({2, 3}))
    assert res.skipped == [2, 3] and len(res.losses) == 4 and res.step == 6
    assert all(torch.isfinite(p).all() for p in res.learner.parameters())
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x.get("skipped")] == [3, 4] and lines[-1]["skipped_total"] == 2
    # A skipped step changes nothing: weights and Adam state after 2 steps == after 4 steps.
    ck = tmp_path / "a" / "checkpoints"
    after2, after4 = (load_file(ck / json.loads((ck / f"step_0000000{i}.json").read_text())["weights"]["file"])
                      for i in (2, 4))
    assert all(torch.equal(after2[k], after4[k]) for k in after2 if not k.startswith("rng/"))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps skipped"):
        run(TrainConfig(out=str(tmp_path / "b"), on_nonfinite="skip", max_skips=3, **{**TINY, "steps": 9}),
            transform_batch=_nan_task(set(range(2, 9))))


def test_bf16_autocast_is_used_when_asked(tmp_path):
    fp32 = run(TrainConfig(out=str(tmp_path / "fp32"), precision="fp32", **TINY)).losses
    bf16 = run(TrainConfig(out=str(tmp_path / "bf16"), precision="bf16", **TINY)).losses
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.05)
    assert TrainConfig(precision="auto").resolved().precision == "auto"  # bf16 only on CUDA


def test_cli_refuses_to_mix_runs_and_resumes(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--steps", "2", "--meta-batch", "2", "--hidden", "8", "--no-progress",
            "--threads", "1", "--device", "cpu", "--checkpoint-every", "1"]
    assert main(args) == 0
    assert main(args) == 1 and "already holds checkpoints" in capsys.readouterr().err
    assert main(args + ["--dtype", "float16"]) == 2 and "dtype must be one of" in capsys.readouterr().err
    assert main(args + ["--resume", "--steps", "3"]) == 0
    assert "resumed from step_00000002.json" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(args + ["--resume", "--hidden", "16"]) == 1
    assert "model config differs" in capsys.readouterr().err


def test_tensorboard_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    run(TrainConfig(out=str(tmp_path), **TINY))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
