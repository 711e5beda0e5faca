"""Benchmark machinery on tiny settings: speed-bench agreement, memory meter, CI, splits, leakage."""
import argparse
import json
import math

import numpy as np
import pytest
import torch

from metabook import EpisodeSampler, load_dataset, mean_ci
from metabook.bench import episodic, fullway, speed
from metabook.bench.__main__ import main as bench_main
from metabook.bench.memory import PeakTensorMemory, peak_memory_mib


def _speed_args(**kw):
    p = argparse.ArgumentParser()
    speed.add_arguments(p)
    return p.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_meta_gradients_agree_with_higher_and_autograd():
    args = _speed_args(meta_batch=4, k_shot=5, inner_steps=3)
    args.methods = ["metabook", "autograd", "higher"]
    grads = speed.meta_gradients(args, torch.device("cpu"))
    for other in ("autograd", "higher"):
        for a, b in zip(grads["metabook"], grads[other]):
            assert (a - b).abs().max() < 1e-5


def test_speed_command_writes_results(tmp_path):
    out = tmp_path / "speed.json"
    assert bench_main(["speed", "--meta-batch", "3", "--k-shot", "4", "--inner-steps", "2", "--repeats", "2",
                       "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"metabook", "metabook-fo", "autograd", "higher"}
    assert all(r["median_ms"] > 0 and r["peak_mib"] > 0 for r in rows.values())
    assert rows["metabook"]["max_abs_grad_diff_vs_autograd"] < 1e-5
    assert res["hardware"]["cpu_count"] and res["versions"]["torch"] == torch.__version__


def test_peak_tensor_memory_counts_live_storage():
    with PeakTensorMemory() as m:
        a = torch.ones(1000, 1000)            # 4 MB
        b = a * 2                              # +4 MB
        del a, b
        c = torch.ones(250, 1000)              # 1 MB, after the others were freed
    assert m.peak == 8_000_000 and m.current == 1_000_000
    del c
    assert 3.8 < peak_memory_mib(lambda: torch.zeros(1000, 1000) + 1) < 8.1


def test_mean_ci_formula():
    v = np.array([80.0, 90.0, 100.0, 70.0])
    m, h = mean_ci(v)
    assert m == 85.0 and math.isclose(h, 1.959963984540054 * v.std(ddof=1) / 2, rel_tol=1e-9)
    assert mean_ci([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        mean_ci([])


def test_train_sampler_uses_only_train_classes(shared_data):
    ds = load_dataset("banking77", data_dir=shared_data)
    for sid in ds.splits():
        split = ds.split(sid)
        s = episodic.train_sampler(ds, sid, 5, 2, 3, seed=0)
        assert set(s.classes) == set(split.train)
        seen = {c for i in range(100) for c in s.episode(i).classes}
        assert seen <= set(split.train) and not seen & (set(split.valid) | set(split.test))
    with pytest.raises(episodic.LeakError):
        episodic._check_episode(["card_arrival", split.test[0]], set(split.train))


def test_encode_classes_restricts_to_requested_classes(shared_data):
    ds = load_dataset("hwu64", data_dir=shared_data)
    test = ds.split("01").test

    class Fake:  # counts sentences instead of running MiniLM
        def encode(self, texts, cache=None):
            return torch.zeros(len(texts), 3)

    emb, labels = episodic.encode_classes(Fake(), ds, test, cache=None, per_class=4)
    assert set(labels) == set(test) and len(labels) == 4 * len(test) == emb.shape[0]


def test_test_accuracies_are_deterministic_and_perfect_on_separable_data():
    labels = np.repeat(np.arange(6), 10)
    emb = torch.nn.functional.one_hot(torch.as_tensor(labels), 6).float() + 0.01 * torch.randn(60, 6)
    pred = episodic.proto_predict("euclidean")
    a = episodic.test_accuracies(pred, emb, labels, 5, 1, 3, episodes=20, seed=3, device="cpu")
    assert a == episodic.test_accuracies(pred, emb, labels, 5, 1, 3, episodes=20, seed=3, device="cpu")
    assert a == [100.0] * 20


def test_fullway_shots_come_from_train_only_and_are_deterministic():
    labels = ["a"] * 7 + ["b"] * 5 + ["c"] * 9
    idx = fullway.draw_shots(labels, 5, seed=0)
    assert idx == fullway.draw_shots(labels, 5, seed=0) and idx != fullway.draw_shots(labels, 5, seed=1)
    assert sorted(labels[i] for i in idx) == ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    with pytest.raises(ValueError, match="class 'b' has 5 training examples, fewer than K=6"):
        fullway.draw_shots(labels, 6, seed=0)


def test_fullway_refuses_target_in_meta_data():
    p = argparse.ArgumentParser()
    fullway.add_arguments(p)
    args = p.parse_args(["--data", "banking77", "--meta-data", "banking77", "hwu64"])
    with pytest.raises(ValueError, match="must not include the target"):
        fullway.run(args)


def test_unknown_command_is_refused(capsys):
    assert bench_main(["nope"]) == 2
