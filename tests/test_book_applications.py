"""metabook.book.applications: Chapter 6's helpers (new domain, SMLMT tests, deployment)."""
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metabook import Episode, EpisodeSampler, IntentDataset
from metabook.book import applications as app
from metabook.data.intents import ClassSplit
from metabook.train import TrainLog

matplotlib.use("Agg")


def clusters(n_class=3, per_class=6, dim=8, seed=0):
    """Well separated unit-length embeddings: class c sits near basis vector c."""
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(n_class), per_class)
    emb = torch.eye(dim)[labels] + 0.05 * torch.randn(len(labels), dim, generator=g)
    return F.normalize(emb, dim=1), labels


def test_support_indices_and_deploy():
    emb, y = clusters()
    sup = app.support_indices(y, 2, draw=3)
    assert len(sup) == 6 and len(set(sup)) == 6
    assert np.bincount(y[sup]).tolist() == [2, 2, 2]
    assert np.array_equal(sup, app.support_indices(y, 2, draw=3))
    run = app.deploy(emb, y, 2, draw=3)
    assert run.accuracy == 100.0 and len(run.query) == len(y) - 6
    assert not set(run.query) & set(sup) and run.pred.shape == run.query.shape


def test_largest_test_domain():
    texts = [f"t{i}" for i in range(8)]
    labels = ["a/x", "a/y", "b/x", "b/y", "b/z", "c/x", "c/x", "a/x"]
    dom_of = {c: c.split("/")[0] for c in set(labels)}
    split = ClassSplit("01", train=["c/x"], valid=["a/x", "a/y"], test=["b/x", "b/y", "b/z"])
    ds = IntentDataset("toy", texts, labels, {"01": split}, dom_of)
    dom = app.largest_test_domain(ds, "01")
    assert dom.name == "b" and dom.short == ["x", "y", "z"]
    assert dom.texts == ["t2", "t3", "t4"] and dom.labels.tolist() == [0, 1, 2]
    bad = IntentDataset("toy", texts, labels,
                        {"01": ClassSplit("01", ["c/x"], ["a/x", "b/y", "b/z"], ["a/y", "b/x"])},
                        dom_of)
    with pytest.raises(ValueError, match="no scenario"):
        app.largest_test_domain(bad, "01")


def test_confusion_and_families():
    cm = app.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert cm.shape == (3, 3) and np.allclose(cm.sum(1), 100) and cm[0, 1] == 50
    names = ["cleaning", "hue_on", "hue_off", "wemo_on", "wemo_off", "coffee"]
    assert app.intent_families(names) == {"hue": ["hue_on", "hue_off"],
                                          "wemo": ["wemo_on", "wemo_off"]}
    g = app.sibling_groups(names)
    assert g[1] == g[2] and g[3] == g[4] and len(set(g)) == 4
    true, pred = np.array([1, 1, 3, 0, 5]), np.array([2, 1, 4, 5, 5])  # 3 errors, 2 in family
    assert app.share_within_groups(true, pred, g) == pytest.approx(200 / 3)
    assert math.isnan(app.share_within_groups(true, true, g))


def test_plot_confusion_writes_cells():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    app.plot_confusion(ax, np.array([[100.0, 0.0], [30.0, 70.0]]), ["a", "b"], "t")
    assert sorted(t.get_text() for t in ax.texts) == ["100", "30", "70"]
    plt.close(fig)


def test_sample_per_class():
    labels = np.array(list("aaabbbbcc"))
    sel = app.sample_per_class(labels, ["a", "b"], 2, seed=0)
    assert len(sel) == 4 and list(sel) == sorted(sel) and set(labels[sel]) == {"a", "b"}
    assert list(app.sample_per_class(labels, ["c", "a"], None)) == [0, 1, 2, 7, 8]
    with pytest.raises(ValueError, match="fewer"):
        app.sample_per_class(labels, ["c"], 3)


def test_downstream_and_pretext_accuracy():
    emb, y = clusters(n_class=5, per_class=8)
    for n in (7, 10, 60):  # no episode is dropped, whatever the count
        res = app.downstream_accuracy(emb, [f"c{v}" for v in y], 2, episodes=n)
        assert res["n"] == n and res["mean"] == 100.0

    class WordEncoder:  # a sentence's embedding is the basis vector of its first letter
        def encode(self, texts):
            return torch.eye(26)[[ord(t[0]) - 97 for t in texts]]

    words = ["apple", "avocado", "banana", "berry", "cherry", "citrus"]
    ep = Episode(support_x=words[0::2], support_y=torch.tensor([0, 1, 2]),
                 query_x=words[1::2], query_y=torch.tensor([0, 1, 2]))
    wrong = Episode(support_x=words[0::2], support_y=torch.tensor([0, 1, 2]),
                    query_x=words[1::2], query_y=torch.tensor([1, 2, 0]))
    res = app.pretext_accuracy(WordEncoder(), [ep, wrong])
    assert res["accuracies"] == [100.0, 0.0]


def test_latency_and_flags():
    calls = []

    class Enc:
        def encode(self, texts):
            calls.append(len(texts))
            return torch.ones(len(texts), 4)

    t = app.latency(Enc(), ["a", "b", "c"], torch.eye(4), ["x"] * 5, repeats=3)
    assert len(t["encode_ms"]) == len(t["score_us"]) == 3 and t["batch_ms"] >= 0
    assert calls == [1, 1, 1, 1, 5]  # warm-up, one per utterance, the batch
    sim_in = torch.linspace(0.5, 1.0, 101)
    assert app.flag_rate(sim_in, torch.tensor([0.1, 0.2, 0.9, 1.0])) == 50.0
    assert app.flag_rate(sim_in, sim_in) == pytest.approx(5, abs=1)
    emb, y = clusters(n_class=3, per_class=10)
    protos = F.normalize(torch.stack([emb[y == c].mean(0) for c in range(3)]), dim=1)
    flags = app.leave_one_out_flags(emb, y, np.arange(len(y)), protos, ["a", "b", "c"])
    assert flags == {"a": 100.0, "b": 100.0, "c": 100.0}


def test_words_from_numbers():
    assert app.mean_pm(81.54, 2.1) == "81.5 ± 2.1"
    assert app.mean_pm(0.6, 0.2, signed=True) == "+0.6 ± 0.2"
    assert app.mean_pm(0.333, 0.30, signed=True) == "+0.33 ± 0.30"
    assert app.paired_verdict(0.333, 0.30).startswith("a gain")
    assert app.paired_verdict(-1.0, 0.5).startswith("a loss")
    assert app.paired_verdict(0.2, 0.3).startswith("no measurable change")
    small = app.downstream_sentence({"1-shot": (0.3, 0.3), "5-shot": (0.3, 0.2)})
    assert "within 0.6 points" in small
    big = app.downstream_sentence({"1-shot": (3.0, 0.5)})
    assert "1-shot +3.0 ± 0.5" in big and "did move" in big
    with pytest.raises(ValueError):
        app.downstream_sentence({})
    assert app.student_t_widening(5) == pytest.approx(2.7764 / 1.95996, rel=1e-4)
    assert app.student_t_widening(10_000) == pytest.approx(1, abs=1e-3)
    with pytest.raises(ValueError):
        app.student_t_widening(1)


def test_meta_train_encoder_trains_and_leaves_eval_mode():
    torch.manual_seed(0)
    data = torch.randn(40, 6)
    labels = np.repeat(np.arange(4), 10)
    sampler = EpisodeSampler(labels, 2, 2, 2, data=data, seed=0)
    enc = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.1))
    before = enc[0].weight.detach().clone()
    log = app.meta_train_encoder(enc, sampler, 3, lr=1e-2, progress=False)
    assert isinstance(log, TrainLog) and len(log.losses) == 3
    assert not enc.training and not torch.equal(before, enc[0].weight)
    for p in enc.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        app.meta_train_encoder(enc, sampler, 1)
