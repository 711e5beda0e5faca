"""Checkpoints: exact round trip, corrupt or mismatched checkpoints refused with nothing touched,
atomic writes, and kill -9 in the middle of a run followed by a bit-exact resume."""
import copy
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from metabook import SinusoidTasks
from metabook.train import (CheckpointError, TrainConfig, build_learner, build_optimizer, latest_checkpoint,
                            load_checkpoint, meta_step, run, save_checkpoint)
from metabook.train import checkpoint as ckmod

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _trained(algorithm="maml", hidden=8, optimizer=None):
    """A learner and optimizer after two real steps (so Adam has state)."""
    cfg = TrainConfig(algorithm=algorithm, hidden=hidden, dtype="float64", optimizer=optimizer).resolved()
    torch.manual_seed(0)
    learner = build_learner(cfg)
    opt = build_optimizer(cfg, learner)
    tasks = SinusoidTasks(dtype=torch.float64)
    for i in range(2):
        meta_step(learner, opt, tasks.batch(3, 5, 5, index=i), step=i)
    return cfg, learner, opt


def _state(learner, opt):
    return copy.deepcopy(learner.state_dict()), copy.deepcopy(opt.state_dict())


def _assert_same(a, b):
    (ma, oa), (mb, ob) = a, b
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            w = ob["state"][i][k]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


@pytest.mark.parametrize("algorithm", ["maml", "metasgd"])
def test_round_trip_restores_weights_optimizer_and_rng_without_pickle(tmp_path, monkeypatch, algorithm):
    cfg, learner, opt = _trained(algorithm)
    saved = _state(learner, opt)
    path = save_checkpoint(tmp_path, 2, learner, opt, config=cfg.to_dict(), model_config=cfg.model_config(),
                           extra={"skipped": [1]})
    after_save = _draws()
    meta_step(learner, opt, SinusoidTasks(dtype=torch.float64).batch(3, 5, 5, index=7), step=2)  # move on
    assert not torch.equal(saved[0]["model.0.weight"], learner.state_dict()["model.0.weight"])

    def no_pickle(*a, **k):
        raise AssertionError("checkpoint loading must not unpickle")
    for mod, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(mod, name, no_pickle)
    ck = load_checkpoint(tmp_path, learner, opt, model_config=cfg.model_config())
    monkeypatch.undo()
    assert ck.step == 2 and ck.path == path and ck.extra == {"skipped": [1]} and ck.rng_restored
    _assert_same(_state(learner, opt), saved)
    assert _draws() == after_save  # Python, NumPy and torch RNG streams continue where they were
    weights = load_file(tmp_path / json.loads(path.read_text())["weights"]["file"])
    if algorithm == "metasgd":  # the learned inner learning rates are in the weights file
        assert {"model/lrs.0__weight", "model/lrs.4__bias"} <= set(weights)
    assert "optim/0/exp_avg" in weights and weights["rng/0/torch_cpu"].dtype == torch.uint8


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _weights(sidecar: Path) -> Path:
    return sidecar.parent / json.loads(sidecar.read_text())["weights"]["file"]


def _edit_sidecar(sidecar: Path, fn):
    meta = json.loads(sidecar.read_text())
    fn(meta)
    sidecar.write_text(json.dumps(meta))


def _reshape_and_rehash(sidecar: Path):
    """A valid file with a matching hash whose tensor has the wrong shape."""
    w = _weights(sidecar)
    t = load_file(w)
    t["model/model.0.weight"] = torch.zeros(3, 1, dtype=torch.float64)
    save_file(t, w)
    import hashlib
    _edit_sidecar(sidecar, lambda m: m["weights"].update(sha256=hashlib.sha256(w.read_bytes()).hexdigest()))


CORRUPTIONS = {
    "flipped byte": (lambda s, other: _flip(_weights(s)), "SHA-256"),
    "truncated weights": (lambda s, other: _weights(s).write_bytes(_weights(s).read_bytes()[:500]), "SHA-256"),
    "sidecar names another hash": (
        lambda s, other: _edit_sidecar(s, lambda m: m["weights"].update(
            sha256=json.loads(other.read_text())["weights"]["sha256"])), "does not match"),
    "weights missing": (lambda s, other: _weights(s).unlink(), "missing"),
    "truncated sidecar": (lambda s, other: s.write_text(s.read_text()[:100]), "not JSON"),
    "wrong shape, valid hash": (lambda s, other: _reshape_and_rehash(s), "shape"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_refused_and_nothing_is_touched(tmp_path, kind):
    cfg, learner, opt = _trained()
    other = save_checkpoint(tmp_path / "other", 1, learner, opt)
    meta_step(learner, opt, SinusoidTasks(dtype=torch.float64).batch(3, 5, 5, index=5), step=2)
    sidecar = save_checkpoint(tmp_path, 3, learner, opt, model_config=cfg.model_config())
    corrupt, message = CORRUPTIONS[kind]
    corrupt(sidecar, other)
    _, fresh, fresh_opt = _trained()
    meta_step(fresh, fresh_opt, SinusoidTasks(dtype=torch.float64).batch(3, 5, 5, index=9), step=2)
    before, rng_before = _state(fresh, fresh_opt), torch.get_rng_state()
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(sidecar, fresh, fresh_opt, model_config=cfg.model_config())
    _assert_same(_state(fresh, fresh_opt), before)
    assert torch.equal(torch.get_rng_state(), rng_before)


@pytest.mark.parametrize("case, message", [
    ("shape", "has shape"), ("missing keys", "missing from checkpoint"),
    ("model config", "model config differs"), ("optimizer", "optimizer is Adam"),
    ("dtype", "float64 in the checkpoint"),
])
def test_mismatched_checkpoint_is_refused_and_nothing_is_touched(tmp_path, case, message):
    cfg, learner, opt = _trained()
    save_checkpoint(tmp_path, 2, learner, opt, model_config=cfg.model_config())
    other = {"shape": dict(hidden=16), "missing keys": dict(algorithm="metasgd"),
             "model config": {}, "optimizer": dict(optimizer="sgd"), "dtype": {}}[case]
    tcfg = TrainConfig(**{**cfg.to_dict(), "optimizer": None, "meta_lr": None, **other}).resolved()
    target = build_learner(tcfg)
    if case == "dtype":
        target = target.float()
    target_opt = build_optimizer(tcfg, target)
    expected = {"hidden": 99} if case == "model config" else None
    before = _state(target, target_opt)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, target, target_opt, model_config=expected)
    _assert_same(_state(target, target_opt), before)


def test_crash_between_weights_and_sidecar_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg, learner, opt = _trained()
    first = save_checkpoint(tmp_path, 1, learner, opt)
    saved = _state(learner, opt)
    meta_step(learner, opt, SinusoidTasks(dtype=torch.float64).batch(3, 5, 5, index=3), step=2)
    real = ckmod._atomic_write

    def crash_on_sidecar(path, data):
        if path.suffix == ".json":
            raise KeyboardInterrupt("power cut")  # weights are on disk, the sidecar is not
        real(path, data)
    monkeypatch.setattr(ckmod, "_atomic_write", crash_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, learner, opt)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert len(list(tmp_path.glob("step_*.safetensors"))) == 2  # an orphan, referenced by nobody
    load_checkpoint(tmp_path, learner, opt)
    _assert_same(_state(learner, opt), saved)
    save_checkpoint(tmp_path, 3, learner, opt, keep=1)  # pruning removes old and orphaned files
    assert sorted(p.name for p in tmp_path.iterdir())[1:] == ["step_00000003.json"]


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metabook.train", "--algorithm", "maml", "--steps", "120",
            "--meta-batch", "4", "--k-shot", "5", "--n-query", "5", "--hidden", "16", "--dtype", "float64",
            "--checkpoint-every", "5", "--keep-checkpoints", "3", "--threads", "1", "--no-progress",
            "--out", str(out), *extra]


def test_kill_9_midway_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "METABOOK_DEVICE": "cpu"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:  # wait until a checkpoint past step 10 exists, then kill -9
            latest = latest_checkpoint(out / "checkpoints")
            if latest is not None and int(latest.stem.split("_")[1]) >= 10:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(latest_checkpoint(out / "checkpoints").stem.split("_")[1])
    assert 10 <= killed_at < 120, "the run finished before it could be killed"
    print(f"killed -9 after the checkpoint of step {killed_at}")

    resumed = subprocess.run(_cli(out, "--resume"), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step_{killed_at:08d}.json" in resumed.stderr

    # The same run, uninterrupted, in this process (same thread count, same kernels).
    ref = run(TrainConfig(algorithm="maml", steps=120, meta_batch=4, k_shot=5, n_query=5, hidden=16,
                          dtype="float64", checkpoint_every=0, threads=1, progress=False, device="cpu",
                          out=str(tmp_path / "reference")))
    final = latest_checkpoint(out / "checkpoints")
    assert final.name == "step_00000120.json"
    weights = load_file(_weights(final))
    for k, v in ref.learner.state_dict().items():
        assert torch.equal(weights[f"model/{k}"], v), k  # bit for bit
    ref_opt = ref.optimizer.state_dict()["state"]
    for i, st in ref_opt.items():
        assert torch.equal(weights[f"optim/{i}/exp_avg_sq"], st["exp_avg_sq"])
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121))  # lines past the checkpoint were dropped, none duplicated
