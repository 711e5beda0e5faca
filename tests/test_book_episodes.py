"""metabook.book.episodes: the tables, figures and measured sentences of Chapters 2 and 3."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from metabook import (MAML, EpisodeSampler, IntentDataset, ProtoNet, Reptile,  # noqa: E402
                      mlp, seed_everything)
from metabook.book.episodes import (BenchLearner, BenchRow, HardSet,  # noqa: E402
                                    adam_step, adaptation_summary, best_learner_sentence,
                                    catch_up_step, class_confusion, comparison_sentence,
                                    curve_table, family_table, first_episode_with_errors,
                                    gaussian_clusters, glue_values, hardest_class_set,
                                    mean_ci_text, overfit_sentence, plot_adaptation_curves,
                                    plot_confusions, ranking_sentence, reptile_step,
                                    run_benchmark, sizes_table, strengths_table,
                                    subsample_per_class, verdict_sentence)
from metabook.data.intents import ClassSplit  # noqa: E402
from metabook.viz.episodes import nearest_prototype  # noqa: E402

CLASSES = ["a", "b", "c", "d", "e", "f"]


def r(mean, ci):
    return {"mean": mean, "ci95": ci}


# ------------------------------------------------------------------ chapter 2
@pytest.fixture
def ds() -> IntentDataset:
    texts, labels = [], []
    for c, n in zip(CLASSES, (8, 9, 10, 11, 12, 13)):
        texts += [f"{c} {i}" for i in range(n)]
        labels += [c] * n
    split = ClassSplit("01", train=CLASSES[:2], valid=CLASSES[2:3], test=CLASSES[3:])
    return IntentDataset("tiny", texts, labels, {"01": split})


def test_mean_ci_text():
    assert mean_ci_text(r(84.44, 1.36)) == "84.4 ± 1.4"
    assert mean_ci_text(r(84.44, 1.36), digits=2) == "84.44 ± 1.36"


def test_subsample_per_class_keeps_classes_and_splits(ds):
    sub = subsample_per_class(ds, 5, seed=3)
    assert [sub.labels.count(c) for c in CLASSES] == [5] * 6
    assert set(sub.texts) <= set(ds.texts)
    assert all(t.split()[0] == y for t, y in zip(sub.texts, sub.labels))  # labels follow texts
    assert sub.split("01").as_dict() == ds.split("01").as_dict()
    assert subsample_per_class(ds, 5, seed=3).texts == sub.texts  # deterministic
    assert subsample_per_class(ds, 5, seed=4).texts != sub.texts
    assert subsample_per_class(ds, None) is ds
    with pytest.raises(ValueError, match="fewer than 9"):
        subsample_per_class(ds, 9)
    with pytest.raises(ValueError):
        subsample_per_class(ds, 0)


def clustered(centres: dict[str, list[float]], per_class: int = 4, noise: float = 0.01):
    g = torch.Generator().manual_seed(0)
    labels, rows = [], []
    for c, v in centres.items():
        labels += [c] * per_class
        rows.append(torch.tensor(v) + noise * torch.randn(per_class, len(v), generator=g))
    return torch.cat(rows), labels


def test_hardest_class_set_finds_the_most_alike_classes():
    # a, b, c point almost the same way; d, e, f are orthogonal to them and to each other
    emb, labels = clustered({"a": [1, 0.1, 0, 0, 0], "b": [1, 0, 0.1, 0, 0],
                             "c": [1, 0.1, 0.1, 0, 0], "d": [0, 0, 0, 1, 0],
                             "e": [0, 0, 0, 0, 1], "f": [0, 1, 0, 0, 0]})
    hard = hardest_class_set(emb, labels, CLASSES, size=3)
    assert isinstance(hard, HardSet)
    assert hard.classes == ["a", "b", "c"]
    assert hard.similarity > 0.95 > hard.overall
    assert hardest_class_set(emb, labels, CLASSES, size=2).classes[0] in "abc"
    with pytest.raises(ValueError):
        hardest_class_set(emb, labels, CLASSES, size=7)
    with pytest.raises(ValueError, match="no example"):
        hardest_class_set(emb, labels, CLASSES + ["z"], size=3)


def test_class_confusion_maps_episode_labels_back_to_classes():
    emb, labels = clustered({c: list(np.eye(6)[i]) for i, c in enumerate(CLASSES)},
                            per_class=6)
    eps = EpisodeSampler(labels, 3, 1, 2, data=emb, classes=["d", "e", "f"], seed=0,
                         num_episodes=20)
    perfect = class_confusion(ProtoNet().predict, eps, ["d", "e", "f"])
    np.testing.assert_allclose(perfect, 100 * np.eye(3))

    def always_zero(sx, sy, qx):  # every query gets the episode's label 0
        return torch.zeros(qx.shape[:2], dtype=torch.long)

    for ep in list(eps)[:5]:
        cm = class_confusion(always_zero, [ep], ["d", "e", "f"])
        col = ["d", "e", "f"].index(ep.classes[0])  # label 0 is ep.classes[0]
        np.testing.assert_allclose(cm[:, col], 100)
        assert cm.sum() == 300

    with pytest.raises(ValueError, match="predict returned shape"):  # e.g. a double argmax
        class_confusion(lambda sx, sy, qx: ProtoNet().predict(sx, sy, qx).argmax(-1), eps,
                        ["d", "e", "f"])


def test_plot_confusions_draws_values_and_returns_the_image():
    fig, axes = plt.subplots(1, 2)
    cms = [100 * np.eye(3), np.full((3, 3), 100 / 3)]
    im = plot_confusions(axes, cms, ["card_arrival", "b", "c"], ["one", "two"])
    np.testing.assert_allclose(im.get_array(), cms[1])
    assert axes[0].get_title() == "one" and axes[1].get_title() == "two"
    assert [t.get_text() for t in axes[0].get_xticklabels()][0] == "card arrival"
    assert sorted(t.get_text() for t in axes[0].texts)[-3:] == ["100", "100", "100"]
    plt.close(fig)


def test_first_episode_with_errors():
    emb, labels = clustered({c: list(np.eye(6)[i]) for i, c in enumerate(CLASSES)},
                            per_class=6)
    easy = EpisodeSampler(labels, 3, 1, 2, data=emb, seed=0)
    with pytest.raises(LookupError):
        first_episode_with_errors(easy, None, min_wrong=1, max_tries=5)
    noisy = torch.randn(len(labels), 6, generator=torch.Generator().manual_seed(1))
    hard = EpisodeSampler(labels, 3, 1, 2, data=noisy, seed=0)
    i, ep, pred = first_episode_with_errors(hard, None, min_wrong=2)
    assert int((pred != ep.query_y).sum()) >= 2
    assert torch.equal(ep.query_y, hard.episode(i).query_y)
    for j in range(i):  # none before it had two errors
        _, p = nearest_prototype(hard.episode(j), None)
        assert int((p != hard.episode(j).query_y).sum()) < 2


def test_family_table_and_best_learner():
    rows = [dict(family="metric", learner="ProtoNet", training="none", test=r(84.4, 1.4),
                 train=r(85.2, 1.5))]
    table = family_table(rows)
    assert table.splitlines()[1] == "|---|---|---|---:|---:|"
    assert "| metric | ProtoNet | none | 84.4 ± 1.4 | 85.2 ± 1.5 |" in table
    assert "ProtoNet, which was not meta-trained" in best_learner_sentence(
        {"ProtoNet": r(84, 1), "ANIL": r(80, 1)}, "ProtoNet")
    assert best_learner_sentence({"ProtoNet": r(84, 1), "ANIL": r(90, 1)},
                                 "ProtoNet").startswith("**The most accurate learner on unseen "
                                                        "intents is ANIL**")


def test_overfit_sentence_follows_the_numbers():
    test = {"ProtoNet": r(84.4, 1.4), "ANIL": r(81.2, 1.5), "icl": r(72.9, 1.7)}
    train = {"ProtoNet": r(85.2, 1.5), "ANIL": r(97.1, 0.8), "icl": r(97.1, 0.7)}
    who = {"icl": "the in-context learner"}
    both = overfit_sentence(test, train, "ProtoNet", who)
    assert both.startswith("**Both meta-trained learners fit")
    assert "ANIL scores 15.9 points" in both and "the in-context learner 24.2" in both
    assert "against 0.8 for ProtoNet" in both  # the difference of the rounded table values
    train["ANIL"] = r(83.0, 1.5)  # 1.8 points: within the margin of ProtoNet's 0.8
    some = overfit_sentence(test, train, "ProtoNet", who)
    assert some.startswith("**The in-context learner fits") and "ANIL does not" in some
    train["icl"] = r(74.0, 1.7)
    assert overfit_sentence(test, train, "ProtoNet", who).startswith("**No meta-trained")
    one = overfit_sentence({"P": r(80, 1), "A": r(70, 1)}, {"P": r(80, 1), "A": r(95, 1)}, "P")
    assert one.startswith("**The meta-trained learner fits its")
    with pytest.raises(ValueError):
        overfit_sentence({"P": r(80, 1)}, {"P": r(80, 1)}, "P")


# ------------------------------------------------------------------ chapter 3
def test_gaussian_clusters_informative_subspace():
    x, y = gaussian_clusters(n_classes=10, per_class=3, dim=8, informative=2, seed=0)
    assert x.shape == (30, 8) and y.tolist() == [c for c in range(10) for _ in range(3)]
    x2, _ = gaussian_clusters(n_classes=10, per_class=3, dim=8, informative=2, seed=0)
    assert torch.equal(x, x2)
    clean, labels = gaussian_clusters(n_classes=10, per_class=3, dim=8, informative=2,
                                      noise=(0.0, 0.0), seed=0)
    means = torch.stack([clean[labels == c][0] for c in range(10)])
    assert torch.linalg.matrix_rank(means) == 2  # the classes differ in 2 directions only
    assert not (clean.abs() < 1e-6).all(0).any()  # ... but no coordinate is zero: rotated
    with pytest.raises(ValueError):
        gaussian_clusters(dim=4, informative=5)


def test_sizes_table():
    t = sizes_table({"steps": 100, "lr": 0.01}, {"steps": "outer steps", "lr": "step size"})
    assert t.splitlines() == ["| size | here | meaning |", "|---|---:|---|",
                              "| `steps` | 100 | outer steps |", "| `lr` | 0.01 | step size |"]
    with pytest.raises(ValueError, match="lr"):
        sizes_table({"steps": 1, "lr": 2}, {"steps": "x"})


def test_curves_plot_table_and_catch_up():
    fast = np.array([[2.0, 0.5, 0.4], [2.0, 0.7, 0.4]])
    slow = np.array([[2.0, 1.5, 0.7], [2.0, 1.5, 0.5]])
    assert catch_up_step(slow, fast) == 2  # slow's mean 0.6 <= fast's 0.6 after one step
    assert catch_up_step(slow + 1, fast) is None
    curves = {"MAML": fast, "joint": slow}
    assert "joint needs 2 steps" in adaptation_summary(curves, "MAML", "joint")
    assert "does not reach in 2" in adaptation_summary({"MAML": fast, "joint": slow + 1},
                                                      "MAML", "joint")
    t = curve_table(curves, [0, 2])
    assert t.splitlines()[0] == "| mean query MSE after S steps | S = 0 | S = 2 |"
    assert "| joint | 2.000 | 0.600 |" in t
    fig, ax = plt.subplots()
    plot_adaptation_curves(ax, curves, inner_lr=0.01, k_shot=10)
    assert [l.get_label() for l in ax.get_lines()] == ["MAML", "joint"]
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [2.0, 1.5, 0.6])
    assert ax.get_yscale() == "log" and "2 held-out" in ax.get_title()
    plt.close(fig)


@pytest.fixture
def workload():
    x, y = gaussian_clusters(n_classes=20, per_class=20, dim=8, informative=4, seed=0)
    train = EpisodeSampler(y, 3, 2, 3, data=x, classes=range(10), seed=1)
    test = EpisodeSampler(y, 3, 2, 3, data=x, classes=range(10, 20), seed=2)
    return [train.batch(4, start=4 * i) for i in range(6)], [test.batch(10)]


def small_learners():
    seed_everything(0)
    pn = ProtoNet(mlp([8, 16, 8]))
    seed_everything(0)
    maml = MAML(mlp([8, 16, 3]), inner_lr=0.5, inner_steps=2)
    seed_everything(0)
    rep = Reptile(mlp([8, 16, 3]), inner_lr=0.5, inner_steps=2, outer_lr=1.0)
    return {"ProtoNet": BenchLearner("metric", pn, adam_step(pn, pn.loss), pn.predict),
            "MAML": BenchLearner("optimization", maml, adam_step(maml, maml.meta_loss),
                                 maml.predict),
            "Reptile": BenchLearner("optimization", rep, reptile_step(rep), rep.predict)}


def test_steps_change_the_parameters(workload):
    train, _ = workload
    for name, lrn in small_learners().items():
        before = [p.detach().clone() for p in lrn.module.parameters()]
        lrn.step(train[0])
        after = list(lrn.module.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), name


def test_adam_step_lowers_the_loss(workload):
    train, _ = workload
    seed_everything(0)
    pn = ProtoNet(mlp([8, 16, 8]))
    step = adam_step(pn, pn.loss, lr=1e-2)
    first = pn.loss(*train[0].tensors()).item()
    for _ in range(30):
        step(train[0])
    assert pn.loss(*train[0].tensors()).item() < 0.5 * first


def test_run_benchmark_round_robin_and_rows(workload):
    train, test = workload
    learners = small_learners()
    calls = []
    for name, lrn in learners.items():
        inner = lrn.step
        lrn.step = (lambda ep, n=name, f=inner: (calls.append(n), f(ep)))
    rows = run_benchmark(learners, train, test)
    names = list(learners)
    expected = [n for i in range(len(train)) for n in (names if i % 2 == 0 else names[::-1])]
    assert calls[:len(expected)] == expected  # round robin, reversed on odd batches
    assert len(calls) == len(expected) + len(names)  # + one memory step each
    assert [r.method for r in rows] == ["raw-feature prototypes"] + names
    assert not rows[0].trained and all(r.trained for r in rows[1:])
    for r in rows[1:]:
        assert r.ms > 0 and r.mib > 0 and 0 <= r.acc <= 100 and r.ci >= 0
    assert [r.method for r in run_benchmark(small_learners(), train, test, floor=None)] == names


def test_run_benchmark_refuses_a_double_argmax(workload):
    train, test = workload
    learners = small_learners()
    maml = learners["MAML"]
    maml.predict = lambda *a, f=maml.predict: f(*a).argmax(-1)  # labels -> argmax again
    with pytest.raises(ValueError, match="one label per query"):
        run_benchmark(learners, train[:1], test)


ROWS = [BenchRow("raw-feature prototypes", "–", math.nan, math.nan, 42.0, 1.4),
        BenchRow("ProtoNet", "metric", 4.7, 0.48, 89.5, 1.0),
        BenchRow("MAML", "optimization", 25.7, 0.96, 81.2, 1.3),
        BenchRow("FOMAML", "optimization", 19.9, 0.52, 58.4, 1.7),
        BenchRow("Meta-SGD", "optimization", 28.2, 1.33, 81.9, 1.3)]


def test_strengths_table():
    pros = {r.method: ("good", "bad") for r in ROWS}
    t = strengths_table(ROWS, pros).splitlines()
    assert t[1] == "|---|---:|---:|---:|---|"
    assert t[2] == "| raw-feature prototypes | – | – | 42.0 ± 1.4 | + good<br>− bad |"
    assert t[4] == "| MAML (optimization) | 25.7 | 0.96 | 81.2 ± 1.3 | + good<br>− bad |"
    with pytest.raises(KeyError):
        strengths_table(ROWS, {"MAML": ("a", "b")})


def test_sentences_follow_the_rows():
    assert ranking_sentence(ROWS) == (
        "From most to least accurate: ProtoNet (89.5%), Meta-SGD (81.9%), MAML (81.2%), "
        "FOMAML (58.4%); all above the raw-feature prototypes floor of 42.0% (beyond both "
        "confidence intervals).")
    low = ROWS + [BenchRow("Reptile", "optimization", 18.0, 1.0, 43.0, 1.6)]
    assert "4 of 5 above" in ranking_sentence(low)
    assert verdict_sentence(ROWS) == ("ProtoNet was both the most accurate learner and the "
                                      "cheapest per step")
    slow = [BenchRow(r.method, r.family, 100.0 if r.method == "ProtoNet" else r.ms, r.mib,
                     r.acc, r.ci) for r in ROWS]
    assert verdict_sentence(slow) == ("ProtoNet was the most accurate learner and FOMAML the "
                                      "cheapest per step")
    assert comparison_sentence(ROWS, "FOMAML", "MAML") == (
        "FOMAML (58.4%) is 22.8 points below MAML (81.2%)")
    assert comparison_sentence(ROWS, "MAML", "FOMAML").endswith("points above FOMAML (58.4%)")
    assert "within the 95% margin" in comparison_sentence(ROWS, "Meta-SGD", "MAML")


def test_glue_values_keys():
    g = glue_values(ROWS)
    assert g["acc_raw"] == 42.0 and "ms_raw" not in g
    assert g["acc_metasgd"] == 81.9 and g["mib_metasgd"] == 1.33 and g["ms_maml"] == 25.7
    assert set(g) == {f"{k}_{m}" for m in ("protonet", "maml", "fomaml", "metasgd")
                      for k in ("acc", "ci", "ms", "mib")} | {"acc_raw", "ci_raw"}
