"""``python -m metabook.bench metapretrain`` on tiny settings: the corpus, the variants' task sources,
the compute accounting, one small end-to-end run and the command line's errors."""
import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metabook.bench import metapretrain as mp
from metabook.bench.__main__ import main as bench_main
from metabook.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(shared_data, monkeypatch):
    """The trainer's sources read ``$METABOOK_DATA``; point it at the shared data."""
    monkeypatch.setenv("METABOOK_DATA", str(shared_data))
    return shared_data


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread than on cores that other processes share."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    mp.add_arguments(p)
    return p.parse_args(list(argv))


def test_normalise():
    assert mp.normalise("  What's  the\tTIME\n") == "what's the time"


@pytest.mark.parametrize("target", ["banking77", "hwu64"])
def test_corpus_excludes_every_target_test_sentence(data, target):
    from metabook.data.intents import load_dataset, load_fewshot

    sentences, counts = mp.build_corpus(target)
    kept = {mp.normalise(s) for s in sentences}
    ds = load_dataset(target)
    test_classes = {c for sid in ds.splits() for c in ds.split(sid).test}
    episodic_test = {mp.normalise(t) for t, y in zip(ds.texts, ds.labels) if y in test_classes}
    fullway_test = {mp.normalise(t) for t in load_fewshot(target).test.texts}
    assert not kept & episodic_test and not kept & fullway_test
    assert counts["target_test_sentences"] == len(episodic_test | fullway_test)
    assert counts["sentences"] == len(sentences) == sum(s["kept"] for s in counts["by_source"].values())
    assert counts["tokens"] == sum(len(s.split()) for s in sentences) and counts["token_unit"] == "whitespace tokens"
    assert counts["by_source"]["wiki"]["sentences"] == 14750
    assert counts["by_source"][target]["kept"] < 0.1 * counts["by_source"][target]["sentences"]
    other = next(d for d in mp.TARGETS if d != target)
    assert counts["by_source"][other]["kept"] > 0.9 * counts["by_source"][other]["sentences"]


def test_pass_factors_count_forward_passes():
    cfg = TrainConfig(task="smlmt", algorithm="maml", adapt="top2", inner_steps=3)
    assert mp.pass_factors("smlmt-maml", cfg, 6) == (1 + 2 * 2 / 6, 1.0)
    assert mp.pass_factors("smlmt-leopard", cfg, 6) == (1 + 3 * 2 / 6, 1.0)
    assert mp.pass_factors("simcse", cfg, 6) == (2.0, 2.0)
    assert mp.pass_factors("supervised", cfg, 6) == (0.0, 1.0)
    assert mp.pass_factors("smlmt-protonet", cfg, 6) == mp.pass_factors("mlm", cfg, 6) == (1.0, 1.0)


def test_every_variant_sees_the_same_sentences_per_step_and_never_the_target(data, tmp_path):
    corpus = tmp_path / "corpus.txt"
    wiki = (data / "clinc150" / "all_wiki_sents.txt").read_text(encoding="utf-8").splitlines()[:3000]
    corpus.write_text("\n".join(wiki) + "\n", encoding="utf-8")
    args = _args("--target", "hwu64", "--encoder", "tiny", "--steps", "1", "--k-shot", "2", "--n-query", "3",
                 "--meta-batch", "2", "--max-length", "16", "--freeze-layers", "0", "--first-order")
    args.device_str, args.overlap = "cpu", str(REPO / "benchmarks/results/overlap/hwu64.json")
    for variant in mp.VARIANTS[1:]:
        cfg = mp.variant_config(variant, args, 0, corpus, tmp_path / variant)
        src = mp.variant_source(variant, cfg, args)
        support, query = mp.pass_factors(variant, cfg, 2)
        ep = src.batch(0, cfg.meta_batch)
        encoded = (len(ep.support_x[0]) if support else 0) + len(ep.query_x[0])
        assert encoded == 5 * (2 + 3), variant
        seen = json.dumps(src.trained_on())
        assert "hwu64" not in seen, variant
        if variant in ("supervised", "hybrid"):
            assert "removed_overlap" in seen, variant
            for i in range(50):
                assert not any("hwu64" in str(c) for c in src.episode(i).classes)
    assert mp.variant_config("smlmt-maml", args, 0, corpus, tmp_path).algorithm == "fomaml"


def test_two_variants_two_seeds_end_to_end(data, one_thread, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "mp.json"
    assert bench_main(["metapretrain", "--target", "hwu64", "--variants", "none", "smlmt-protonet", "--seeds", "0",
                       "1", "--encoder", "tiny", "--steps", "2", "--meta-batch", "1", "--freeze-layers", "0",
                       "--episodes", "4", "--eval-splits", "01", "--draws", "2", "--fullway-k", "5", "--C", "1",
                       "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert r["benchmark"] == "metapretrain" and r["git_sha"] and r["versions"]["torch"] and r["hardware"]["device"]
    assert r["corpus"]["sentences"] == len(Path(r["corpus"]["path"]).read_text(encoding="utf-8").splitlines())
    metrics = ["episodic_1shot", "episodic_5shot", "fullway_frozen_5shot", "fullway_logreg_5shot"]
    assert r["metrics"] == metrics and set(r["results"]) == {"none", "smlmt-protonet"}
    for variant, seeds in r["results"].items():
        assert set(seeds) == {"0", "1"}
        for seed in seeds.values():
            assert len(seed["episodic"]["1shot"]["accuracies"]) == 1
            assert len(seed["fullway_logreg"]["5shot"]["draws"]) == 2 and seed["fullway_logreg"]["5shot"]["C"] == 1
            assert len(mp.units(seed, "episodic_5shot")[0]) == 4
        for m in metrics:  # seeds x splits (episodic), seeds x draws (full-way)
            s = r["summary"][variant][m]
            assert s["units"] == (2 if m.startswith("episodic") else 4), m
            assert 0 <= s["mean"] <= 100 and math.isfinite(s["ci95"]) and len(s["seed_means"]) == 2
    train = r["results"]["smlmt-protonet"]["0"]["train"]
    assert train["steps"] == 2 and train["sentences"] == 2 * 25 and train["token_passes"] == train["tokens"] > 0
    assert train["unseen_check"] == "passed" and train["trained_on"]["task"] == "smlmt"
    assert r["compute"]["per_variant_mean_over_seeds"]["none"]["token_passes"] == 0
    diff = r["paired"]["smlmt-protonet"]["none"]
    assert set(diff) == set(metrics) and all(math.isfinite(d["mean"]) for d in diff.values())
    assert [diff[m]["units"] for m in metrics] == [2, 2, 4, 4]
    assert "none" not in r["paired"]


def test_a_committed_command_parses_and_names_its_file():
    """What tests/test_provenance.py checks of a committed metapretrain result."""
    cmd = ("python -m metabook.bench metapretrain --target banking77 --seeds 0 1 2 "
           "--out benchmarks/results/metapretrain_banking77.json")
    p = argparse.ArgumentParser(exit_on_error=False)
    mp.add_arguments(p)
    assert p.parse_args(shlex.split(cmd)[4:]).out == "benchmarks/results/metapretrain_banking77.json"


@pytest.mark.parametrize("argv, message", [
    (["--target", "hwu64", "--variants", "none", "bert"], "--variants"),
    (["--target", "snips"], "--target"),
    ([], "--target"),
    (["--target", "hwu64", "--seeds"], "--seeds"),
    (["--target", "hwu64", "--seeds", "-1"], "--seeds"),
    (["--target", "hwu64", "--steps", "0"], "--steps"),
    (["--target", "hwu64", "--eval-splits", "09"], "--eval-splits"),
])
def test_bad_input_exits_2_with_one_line(data, argv, message, capsys):
    assert bench_main(["metapretrain", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_help_exits_0():
    res = subprocess.run([sys.executable, "-m", "metabook.bench", "metapretrain", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0 and "--variants" in res.stdout, res.stderr
