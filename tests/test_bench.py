"""Benchmark machinery on tiny settings: speed-bench agreement, memory meter, CI, splits, leakage."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metabook import load_dataset, mean_ci
from metabook.bench import episodic, fullway, speed
from metabook.bench.__main__ import main as bench_main
from metabook.bench.memory import PeakTensorMemory, peak_memory_mib
from metabook.train.finetune import shot_finetune


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


def test_trainer_intent_source_uses_only_train_classes(shared_data):
    from metabook.train.sources import IntentSource

    ds = load_dataset("banking77", data_dir=shared_data)
    for sid in ds.splits():
        split = ds.split(sid)
        src = IntentSource(ds, sid, 5, 2, 3, seed=0, valid_episodes=20)
        seen = {c for i in range(100) for c in src.episode(i).classes}
        assert seen <= set(split.train) and not seen & (set(split.valid) | set(split.test))
        valid = {c for b in src.valid_batches(8) for cs in b.classes for c in cs}
        assert valid <= set(split.valid)
        assert src.trained_on()["train_classes"] == list(split.train)


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


def test_fullway_refuses_target_in_meta_data(shared_data):
    p = argparse.ArgumentParser()
    fullway.add_arguments(p)
    args = p.parse_args(["--data", "banking77", "--meta-data", "banking77", "hwu64", "--data-dir", str(shared_data)])
    with pytest.raises(ValueError, match="must not include the target"):
        fullway.run(args)


def test_unknown_command_is_refused(capsys):
    assert bench_main(["nope"]) == 2


def test_text_workload_meta_gradients_agree_with_higher_and_autograd():
    args = _speed_args(workload="text", meta_batch=3, k_shot=2, inner_steps=2)
    args.methods = ["metabook", "autograd", "higher"]
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(60, 12, generator=g), dim=1)
    labels = [f"c{i % 6}" for i in range(60)]
    args.wl = speed.TextWorkload(args, torch.device("cpu"), embeddings=emb, labels=labels)
    assert args.wl.describe()["n_way"] == 5 and args.wl.batch(0).support_x.shape == (3, 10, 12)
    grads = speed.meta_gradients(args, torch.device("cpu"))
    assert any(float(a.abs().max()) > 0 for a in grads["metabook"])
    for other in ("autograd", "higher"):
        for a, b in zip(grads["metabook"], grads[other]):
            assert (a - b).abs().max() < 1e-5


def test_check_unseen_refuses_datasets_an_encoder_saw(tmp_path):
    from metabook.train import TrainedOnError, check_unseen
    from metabook.train.export import RECORD, _FORMAT

    (tmp_path / RECORD).write_text(json.dumps({"format": _FORMAT, "trained_on": {
        "task": "datasets", "datasets": ["clinc150", "hwu64"]}}))
    check_unseen(tmp_path, "banking77")
    for target in ("hwu64", "/some/dir/clinc150/"):
        with pytest.raises(TrainedOnError, match="every class"):
            check_unseen(tmp_path, target)
    check_unseen(tmp_path / "missing", "hwu64")  # a plain model folder has no record: nothing to refuse


def test_pretrain_refuses_target_in_meta_data(capsys):
    assert bench_main(["pretrain", "--exclude", "banking77", "--meta-data", "banking77", "hwu64",
                       "--meta-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must not include" in err[0]


class _CharEncoder(torch.nn.Module):
    """A tiny trainable sentence encoder (mean of character embeddings) with MiniLMEncoder's interface."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(128, dim, mode="mean")

    def forward(self, texts):
        ids = [torch.tensor([ord(c) % 128 for c in t]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return torch.nn.functional.normalize(self.emb(torch.cat(ids), offsets), dim=1)

    def encode(self, texts, cache=None, progress=False):
        with torch.no_grad():
            return self(texts)


def _shots():
    words = {"a": ["aaab", "aaba", "abaa"], "b": ["bbbc", "bbcb", "bcbb"], "c": ["ccca", "ccac", "cacc"]}
    texts = [t for ts in words.values() for t in ts]
    return texts, [lab for lab, ts in words.items() for _ in ts]


def test_shot_finetune_lowers_the_full_way_loss_and_is_deterministic():
    texts, labels = _shots()
    args = argparse.Namespace(lr=0.05, scale=10.0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        enc = _CharEncoder()
        losses = shot_finetune(enc, texts, labels, 30, args, torch.device("cpu"), batch_size=4,
                                       seed=1, progress=False)
        runs.append((losses, enc.emb.weight.detach().clone()))
    (losses, w), (losses2, w2) = runs
    assert losses == losses2 and torch.equal(w, w2)
    assert len(losses) == 30 * 3  # 9 shots in batches of 4: 3 batches an epoch
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert not enc.training


def test_shot_finetune_refuses_bad_input():
    args = argparse.Namespace(lr=0.01, scale=10.0)
    with pytest.raises(ValueError, match="at least 2 shots"):
        shot_finetune(_CharEncoder(), ["ab", "cd", "ce"], ["x", "y", "y"], 1, args, torch.device("cpu"))
    with pytest.raises(ValueError, match="equally many"):
        shot_finetune(_CharEncoder(), ["ab", "cd"], ["x"], 1, args, torch.device("cpu"))


def test_center_embeddings_is_cl2n():
    emb = torch.tensor([[3.0, 1.0], [1.0, 3.0]])
    out = episodic.center_embeddings(emb, emb.mean(0))
    assert torch.allclose(out, torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) / 2 ** 0.5)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="expected"):
        episodic.center_embeddings(emb, torch.zeros(3))


def test_fullway_valid_split_needs_one(shared_data):
    p = argparse.ArgumentParser()
    fullway.add_arguments(p)
    args = p.parse_args(["--data", "banking77", "--algo", "frozen", "--eval-split", "valid",
                         "--data-dir", str(shared_data)])
    with pytest.raises(ValueError, match="no official valid split"):
        fullway.run(args)


def test_episodic_frozen_end_to_end_with_centring(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "epi.json"
    assert bench_main(["episodic", "--data", "hwu64", "--algo", "frozen", "--splits", "01", "--episodes", "30",
                       "--center", "train", "--center-per-class", "5", "--distance", "cosine",
                       "--data-dir", str(shared_data), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    for k in (1, 5):
        s = r["summary"][f"{k}shot"]
        assert s["episodes"] == 30 and 0 <= s["mean"] <= 100 and s["max_eval_seconds"] > 0
        assert r["summary"][f"{k}shot_uncentered"]["episodes"] == 30
    assert r["splits"] == ["01"] and r["per_split"][0]["test_classes"] == len(
        load_dataset("hwu64", data_dir=shared_data).split("01").test)


def test_pretrain_then_init_chain(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    run_dir, record = tmp_path / "pre", tmp_path / "record.json"
    assert bench_main(["pretrain", "--exclude", "banking77", "--meta-data", "hwu64", "--meta-steps", "2",
                       "--train-way", "3", "--freeze-layers", "5", "--data-dir", str(shared_data),
                       "--out", str(run_dir), "--record", str(record), "--no-progress"]) == 0
    rec = json.loads(record.read_text())
    assert rec["trained_on"] == {"task": "datasets", "datasets": ["hwu64"], "classes": 64}
    assert rec["meta_pretrain"]["steps"] == 2 and rec["git_sha"]
    enc = run_dir / "encoder"
    # trained on hwu64, so it may not be scored on hwu64: one line, exit 2
    assert bench_main(["episodic", "--data", "hwu64", "--algo", "frozen", "--splits", "01", "--episodes", "2",
                       "--data-dir", str(shared_data), "--init", str(enc), "--out", str(tmp_path / "x.json")]) == 2
    assert "TrainedOnError" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    out = tmp_path / "fw.json"
    assert bench_main(["fullway", "--data", "banking77", "--algo", "protonet", "--k-shot", "2", "--draws", "1",
                       "--shot-epochs", "1", "--freeze-layers", "5", "--data-dir", str(shared_data),
                       "--init", str(enc), "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["init"]["trained_on"]["datasets"] == ["hwu64"] and r["test_size"] == 3080 and r["classes"] == 77
    assert 0 < r["results"]["2shot"]["mean"] <= 100 and r["git_sha"] and r["command"].startswith("python -m")


def test_episodic_protonet_meta_trains_through_the_trainer(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "epi.json"
    assert bench_main(["episodic", "--data", "hwu64", "--algo", "protonet", "--splits", "01", "--episodes", "10",
                       "--train-steps", "2", "--val-every", "1", "--val-episodes", "4", "--freeze-layers", "5",
                       "--data-dir", str(shared_data), "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    mt = r["per_split"][0]["meta_train"]
    assert [h["step"] for h in mt["history"]] == [0, 1, 2] and mt["best_step"] in (0, 1, 2)
    from metabook.train import read_record
    rec = read_record(Path(mt["run"]) / "encoder")
    assert rec["trained_on"]["split"] == "01" and rec["best_step"] == mt["best_step"]


def test_episodic_accepts_your_own_protaugment_folder(tmp_path, monkeypatch):
    """``--data`` takes any folder in the ProtAugment layout; the JSON is named after it."""
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "my_intents"
    topics = {"weather": "will it rain in {}", "alarm": "wake me up at {} tomorrow",
              "music": "play some {} songs", "taxi": "get me a cab to {}", "pizza": "order a {} pizza",
              "timer": "set a timer for {} minutes", "news": "read me the {} headlines",
              "lights": "turn the {} lights off"}
    fill = ["paris", "seven", "jazz", "the airport", "large", "ten", "sports", "kitchen", "rome", "nine"]
    (root / "few_shot" / "01").mkdir(parents=True)
    with open(root / "full.jsonl", "w") as f:
        for lab, pattern in topics.items():
            for w in fill:
                f.write(json.dumps({"sentence": pattern.format(w), "label": lab}) + "\n")
    names = list(topics)
    for part, cls in (("train", names[:2]), ("valid", names[2:3]), ("test", names[3:])):
        (root / "few_shot" / "01" / f"labels.{part}.txt").write_text("\n".join(cls) + "\n")
    out = tmp_path / "own.json"
    assert bench_main(["episodic", "--data", str(root), "--algo", "frozen", "--episodes", "20",
                       "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["splits"] == ["01"] and r["per_split"][0]["test_classes"] == 5
    assert r["summary"]["5shot"]["mean"] > 90  # templated intents are easy for MiniLM


def test_fullway_smlmt_stage_uses_only_unlabeled_train_text(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    seen = []
    real = fullway.smlmt_source

    def spy(texts, args):
        seen.append(list(texts))
        return real(texts, args)

    monkeypatch.setattr(fullway, "smlmt_source", spy)
    out = tmp_path / "fw.json"
    assert bench_main(["fullway", "--data", "banking77", "--algo", "protonet", "--k-shot", "2", "--draws", "1",
                       "--meta-steps", "0", "--smlmt-steps", "2", "--train-way", "3", "--train-shot", "1",
                       "--train-query", "1", "--shot-epochs", "0", "--freeze-layers", "5",
                       "--data-dir", str(shared_data), "--out", str(out), "--no-progress"]) == 0
    from metabook.data.intents import load_official

    official = load_official("banking77", data_dir=shared_data)
    assert seen == [official.train.texts]  # the train sentences only (their labels never passed)
    assert not set(seen[0]) & (set(official.test.texts) - set(official.train.texts))
    r = json.loads(out.read_text())
    assert r["smlmt"]["steps"] == 2 and r["smlmt"]["words"] > 100


@pytest.mark.parametrize("cmd", [[], ["speed"], ["encoder"], ["episodic"], ["fullway"], ["overlap"], ["pretrain"], ["report"]])
def test_every_help_exits_0(cmd):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "metabook.bench", *cmd, "--help"], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and "usage" in res.stdout.lower(), res.stderr


def _write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_rerun_compare_pairs_split_means_and_draws(tmp_path):
    from metabook.bench.rerun import compare, table

    epi = lambda means: {"data": "hwu64", "algo": "protonet", "k_shot": [1],  # noqa: E731
                         "summary": {"1shot": {"mean": float(np.mean(means)), "ci95": 0.5,
                                               "split_means": means}}}
    full = lambda draws: {"data": "banking77", "algo": "protonet",  # noqa: E731
                          "settings": {"k_shot": [5]},
                          "results": {"5shot": {"mean": float(np.mean(draws)), "ci95": 0.6,
                                                "draws": draws}}}
    _write(tmp_path / "episodic_hwu64_protonet-xdata.json", epi([80.0, 82.0, 84.0]))
    _write(tmp_path / "rerun" / "episodic_hwu64_protonet-xdata.json", epi([81.0, 83.0, 85.0]))
    _write(tmp_path / "fullway_banking77_protonet.json", full([70.0, 72.0]))
    _write(tmp_path / "rerun" / "fullway_banking77_protonet.json", full([70.0, 76.0]))
    _write(tmp_path / "rerun" / "pretrain_no-hwu64.json", {"format": "metabook-encoder-v1"})
    rows = compare(tmp_path)
    assert [(r["protocol"], r["algo"], r["k"]) for r in rows] == [
        ("episodic", "protonet-xdata", 1), ("full-way", "protonet", 5)]
    e, f = rows
    assert e["diff"] == (1.0, 0.0) and e["splits"] == 3 and e["within_ci"] is False
    assert f["diff"][0] == 2.0 and f["splits"] == 2 and f["within_ci"] is False
    assert "| full-way | banking77 | protonet | 5 |" in table(rows)
    # once the current code regenerates a file, the earlier one is kept in legacy/ and compared
    _write(tmp_path / "legacy" / "episodic_hwu64_protonet-xdata.json", epi([79.0, 81.0, 83.0]))
    _write(tmp_path / "episodic_hwu64_protonet-xdata.json", epi([81.0, 83.0, 85.0]))
    assert compare(tmp_path)[0]["diff"] == (2.0, 0.0)


def test_rerun_compare_refuses_unpaired_units(tmp_path):
    from metabook.bench.rerun import compare

    rec = lambda means: {"data": "hwu64", "algo": "frozen", "k_shot": [1],  # noqa: E731
                         "summary": {"1shot": {"mean": 1.0, "ci95": 0.1, "split_means": means}}}
    _write(tmp_path / "episodic_hwu64_frozen.json", rec([1.0, 2.0]))
    _write(tmp_path / "rerun" / "episodic_hwu64_frozen.json", rec([1.0]))
    with pytest.raises(ValueError, match="split_means"):
        compare(tmp_path)


def _fewshot_folder(root, shared_data, classes=4, per_class=12, draws=(2,)):
    """A small full-way folder (train|valid|test|train_K/{seq.in,label}) cut from HWU64's real splits."""
    from metabook.data import load_fewshot

    src = load_fewshot("hwu64", data_dir=shared_data)
    keep = sorted(set(src.train.labels))[:classes]
    parts = {"train": src.train, "valid": src.valid, "test": src.test}
    for name, lt in parts.items():
        rows = [(t, y) for t, y in zip(lt.texts, lt.labels) if y in keep]
        rows = [r for c in keep for r in [r for r in rows if r[1] == c][:per_class]]
        (root / name).mkdir(parents=True)
        (root / name / "seq.in").write_text("\n".join(t for t, _ in rows) + "\n", encoding="utf-8")
        (root / name / "label").write_text("\n".join(y for _, y in rows) + "\n", encoding="utf-8")
    for k in draws:
        (root / f"train_{k}").mkdir()
        rows = [r for c in keep for r in [(t, y) for t, y in zip(src.train.texts, src.train.labels) if y == c][-k:]]
        (root / f"train_{k}" / "seq.in").write_text("\n".join(t for t, _ in rows) + "\n", encoding="utf-8")
        (root / f"train_{k}" / "label").write_text("\n".join(y for _, y in rows) + "\n", encoding="utf-8")
    return root


def test_load_fewshot_registered_counts(shared_data):
    from metabook.data import load_fewshot

    for name, sizes, classes in [("banking77", (8622, 1540, 3080), 77), ("hwu64", (8954, 1076, 1076), 64)]:
        s = load_fewshot(name, data_dir=shared_data)
        assert (len(s.train.texts), len(s.valid.texts), len(s.test.texts)) == sizes
        assert len(set(s.train.labels)) == classes == len(set(s.test.labels))
        assert {k: len(v.texts) for k, v in s.published.items()} == {5: 5 * classes, 10: 10 * classes}


def test_load_fewshot_folder_errors(shared_data, tmp_path):
    from metabook.data import DataFormatError, load_fewshot

    root = _fewshot_folder(tmp_path / "f", shared_data)
    assert list(load_fewshot(root).published) == [2]
    (root / "test" / "label").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="labels for"):
        load_fewshot(root)
    (root / "test" / "label").write_bytes(b"\xff\xfe\n")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        load_fewshot(root)
    (root / "valid" / "label").unlink()
    with pytest.raises(FileNotFoundError, match="valid/label is missing"):
        load_fewshot(root)
    with pytest.raises(ValueError, match="neither a folder"):
        load_fewshot("nope")


def test_fullway_logreg_on_a_folder_chooses_c_on_valid(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    root = _fewshot_folder(tmp_path / "mini", shared_data)
    out = tmp_path / "lr.json"
    assert bench_main(["fullway", "--data", str(root), "--algo", "logreg", "--k-shot", "2", "--draws", "2",
                       "--C", "0.01", "10", "--no-progress", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    res = r["results"]["2shot"]
    assert r["splits"] == "fewshot" and r["classes"] == 4
    assert set(res["valid_sweep"]) == {"0.01", "10.0"}
    assert res["C"] == max((0.01, 10.0), key=lambda c: res["valid_sweep"][str(c)])
    assert len(res["draws"]) == 2 and "published_draw" in res
    assert res["mean"] > 25.0  # 4-way chance
    assert res["ci95_draws"] > res["ci95"] or res["std"] == 0


class _HashEncoder:
    """Deterministic pseudo-embeddings, one per sentence (no model needed)."""

    def encode(self, texts, cache=None):
        import zlib
        rows = [torch.from_numpy(np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16)) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows).float(), dim=1)


def test_overlap_domain_rules_threshold_and_reading(shared_data, tmp_path):
    from metabook.bench import overlap as ov

    strict = ov.overlap("banking77", _HashEncoder(), threshold=0.999, data_dir=shared_data)
    clinc = load_dataset("clinc150", data_dir=shared_data)
    expected = {c for c, d in clinc.domain_of.items() if d in ("banking", "credit_cards")}
    assert len(expected) == 30 and {r["intent"] for r in strict} == expected
    assert all(r["reason"] == "domain rule" for r in strict)
    loose = ov.overlap("banking77", _HashEncoder(), threshold=0.3, data_dir=shared_data)
    assert len(loose) > len(strict) and {r["intent"] for r in strict} <= {r["intent"] for r in loose}
    with pytest.raises(ValueError, match="threshold"):
        ov.overlap("banking77", _HashEncoder(), threshold=0.0, data_dir=shared_data)
    path = tmp_path / "b77.json"
    path.write_text(json.dumps({"benchmark": "overlap", "target": "banking77", "removed": strict}))
    assert ov.read_overlap(path, "banking77") == {"clinc150": expected}
    with pytest.raises(ValueError, match="not an overlap list for 'hwu64'"):
        ov.read_overlap(path, "hwu64")


def test_pretrain_source_drops_the_overlapping_intents(shared_data):
    from metabook.bench.pretrain import datasets_source

    args = argparse.Namespace(data_dir=str(shared_data), train_way=5, train_shot=1, train_query=1, seed=0)
    full = datasets_source(["clinc150"], args)
    cut = datasets_source(["clinc150"], args, {"clinc150": {"alarm", "timer"}})
    assert len(cut.train.classes) == len(full.train.classes) - 2
    assert not {"clinc150:alarm", "clinc150:timer"} & set(cut.train.classes)
    assert cut.trained_on()["removed_overlap"] == {"clinc150": ["alarm", "timer"]}
    with pytest.raises(ValueError, match="lacks"):
        datasets_source(["clinc150"], args, {"clinc150": {"no_such_intent"}})


def test_fullway_logreg_levers_are_chosen_on_valid_and_marked(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    root = _fewshot_folder(tmp_path / "mini", shared_data)
    out = tmp_path / "ens.json"
    assert bench_main(["fullway", "--data", str(root), "--algo", "logreg", "--k-shot", "2", "--draws", "2",
                       "--C", "1", "10", "--proto-weight", "0", "0.5", "--label-names", "--no-progress",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["2shot"]
    assert set(res["valid_sweep"]) == {f"C={c},w={w}" for c in (1.0, 10.0) for w in (0.0, 0.5)}
    assert res["valid_sweep"][f"C={res['C']},w={res['proto_weight']}"] == max(res["valid_sweep"].values())
    assert res["uses_label_names"] is True
    assert fullway.label_text("card_arrival") == "card arrival" and fullway.label_text("alarm/set") == "alarm set"
    assert bench_main(["fullway", "--data", str(root), "--algo", "logreg", "--proto-weight", "1.5",
                       "--no-progress", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def test_fullway_setfit_peer_chooses_iterations_on_valid(shared_data, tmp_path, monkeypatch):
    """SetFit on a 4-intent cut of HWU64's real splits: one own draw plus the published one."""
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    root = _fewshot_folder(tmp_path / "mini", shared_data, per_class=6)
    out = tmp_path / "setfit.json"
    assert bench_main(["fullway", "--data", str(root), "--algo", "setfit", "--setfit-iterations", "1", "2",
                       "--k-shot", "2", "--draws", "1", "--no-progress", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    res = record["results"]["2shot"]
    assert set(res["valid_sweep"]) == {"1", "2"} and res["valid_sweep"][str(res["iterations"])] == max(
        res["valid_sweep"].values())
    chosen = res["runs"][str(res["iterations"])]
    assert [r["test"] for r in chosen] == res["draws"] + [res["published_draw"]]
    assert all(r["pairs"] == 2 * int(it) * 8 for it, rs in res["runs"].items() for r in rs)  # 4 intents x 2 shots
    assert res["published_draw"] > 25.0  # 4-way: above chance
    # SetFit's default oversampling of 8 sentences: 36 unordered pairs (self-pairs included), 12 positive
    # (4 intents x 3) and 24 negative; the positives are repeated up to 24
    assert res["default_pairs"] == 48
    for bad in (["--setfit-iterations", "0"], ["--setfit-iterations", "many"], ["--init", str(root)],
                ["--draws", "0", "--no-published"]):
        assert bench_main(["fullway", "--data", str(root), "--algo", "setfit", "--k-shot", "2", *bad,
                           "--no-progress", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def test_fullway_cpft_recipe_runs_both_stages(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    root = _fewshot_folder(tmp_path / "mini", shared_data, per_class=6)
    out = tmp_path / "cpft.json"
    assert bench_main(["fullway", "--data", str(root), "--algo", "cpft", "--cpft-steps", "2", "--shot-epochs", "1",
                       "--k-shot", "2", "--draws", "2", "--no-progress", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    res = record["results"]["2shot"]
    assert len(res["draws"]) == 2 and len(res["valid"]) == 3 and "published_draw" in res
    assert all(25.0 < a <= 100.0 for a in res["draws"] + [res["published_draw"]])  # 4-way: above chance
    assert record["cpft_pretrain"]["steps"] == 2 and len(record["cpft_pretrain"]["last_losses"]) == 2
