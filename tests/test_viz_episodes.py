"""metabook.viz.episodes on a tiny synthetic episode (random embeddings, Agg backend)."""
import html

import matplotlib.legend

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from metabook import Episode, EpisodeSampler, IntentDataset, ProtoNet, prototypes  # noqa: E402
from metabook.data.intents import ClassSplit  # noqa: E402
from metabook.viz.episodes import (class_colors, episode_embeddings, episode_explorer,  # noqa: E402
                                   episode_figure_png, episode_table, nearest_prototype,
                                   plot_episode, project_2d)

CLASSES = ["card_arrival", "top_up_failed", "exchange_rate", "pin_blocked", "refund", "cash"]


def tiny_dataset(per_class: int = 6) -> IntentDataset:
    texts, labels = [], []
    for c in CLASSES:
        for i in range(per_class):
            texts.append(f"{c} sentence {i} <b>&")  # HTML that must be escaped
            labels.append(c)
    split = ClassSplit("01", train=CLASSES[:2], valid=CLASSES[2:4], test=CLASSES[4:])
    return IntentDataset("tiny", texts, labels, {"01": split})


@pytest.fixture
def ds() -> IntentDataset:
    return tiny_dataset()


@pytest.fixture
def table_emb(ds) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(len(ds), 16, generator=g), dim=1)


@pytest.fixture
def episode(ds):
    return EpisodeSampler.from_dataset(ds, None, None, n_way=3, k_shot=2, n_query=3, seed=1).episode(0)


def test_table_has_every_sentence_and_class(episode):
    pred = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 0])  # two wrong
    out = episode_table(episode, pred, caption="demo")
    for s in list(episode.support_x) + list(episode.query_x):
        assert html.escape(s) in out
    assert "<b>&" not in out  # escaped
    for c in episode.classes:
        assert html.escape(c) in out
    assert out.count("<tr") == 1 + 3  # header + one row per class
    assert out.count("✗") == 2 and out.count("✓") == 7
    for col in class_colors(3):
        assert col in out


def test_table_without_predictions_and_bad_input(episode):
    out = episode_table(episode)
    assert "✓" not in out and "✗" not in out
    with pytest.raises(ValueError, match="predictions"):
        episode_table(episode, [0, 1])
    bad = Episode(episode.support_x[:-1], episode.support_y, episode.query_x, episode.query_y,
                  episode.classes)
    with pytest.raises(ValueError, match="support inputs"):
        episode_table(bad)
    with pytest.raises(TypeError, match="sentences"):
        episode_table(Episode(torch.zeros(6, 4), episode.support_y, torch.zeros(9, 4),
                              episode.query_y, episode.classes))
    with pytest.raises(ValueError, match="classes"):
        episode_table(Episode(episode.support_x, episode.support_y, episode.query_x,
                              episode.query_y, episode.classes[:2]))


def test_embeddings_lookup_and_errors(episode, table_emb):
    s, q = episode_embeddings(episode, table_emb)
    assert torch.equal(s, table_emb[episode.support_idx])
    assert torch.equal(q, table_emb[episode.query_idx])
    s2, q2 = episode_embeddings(episode, (s, q))
    assert torch.equal(s2, s) and torch.equal(q2, q)
    with pytest.raises(ValueError, match="3 query embeddings"):
        episode_embeddings(episode, (s, q[:3]))
    with pytest.raises(ValueError, match="rows"):
        episode_embeddings(episode, table_emb[:5])
    with pytest.raises(TypeError, match="no embeddings"):
        episode_embeddings(episode)
    protos, pred = nearest_prototype(episode, table_emb)
    assert torch.allclose(protos, prototypes(s, episode.support_y))
    assert torch.equal(pred, ProtoNet().predict(s[None], episode.support_y[None], q[None])[0])


def test_project_2d_is_pca():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=g) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1])
    (x2, m2), explained = project_2d(x, x.mean(0, keepdim=True))
    assert x2.shape == (30, 2) and torch.allclose(m2, torch.zeros(1, 2), atol=1e-5)
    assert explained[0] > explained[1] > 0 and float(explained.sum()) <= 1 + 1e-6
    assert x2[:, 0].var() > x2[:, 1].var()


def test_plot_counts_points_and_prototypes(episode, table_emb):
    fig, ax = plt.subplots()
    info = plot_episode(ax, episode, table_emb)
    by_label = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    n_wrong = int((info.predictions != episode.query_y).sum())
    assert by_label["support"] == 6
    assert by_label["query, correct"] + by_label["query, wrong"] == 9
    assert by_label["query, wrong"] == n_wrong
    assert by_label["prototypes"] == 3
    assert info.prototypes_2d.shape == (3, 2) and info.query_2d.shape == (9, 2)
    assert 0 <= info.accuracy <= 100
    texts = [t.get_text() for t in ax.get_legend().get_texts()]  # the class legend
    assert texts == list(episode.classes)
    assert any(isinstance(a, matplotlib.legend.Legend) and len(a.get_texts()) == 4
               for a in ax.artists)  # the marker legend
    plt.close(fig)
    png, info2 = episode_figure_png(episode, table_emb, legend=False)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and info2.accuracy == info.accuracy


def test_plot_rejects_mismatched_embeddings(episode, table_emb):
    fig, ax = plt.subplots()
    s, q = episode_embeddings(episode, table_emb)
    with pytest.raises(ValueError, match="support"):
        plot_episode(ax, episode, (s[:-1], q))
    plt.close(fig)


def test_plot_uses_tensor_episode():
    sampler = EpisodeSampler([0, 0, 0, 1, 1, 1], 2, 1, 2, data=torch.randn(6, 8), seed=0)
    fig, ax = plt.subplots()
    info = plot_episode(ax, sampler.episode(0), legend=False)
    assert info.support_2d.shape == (2, 2)
    plt.close(fig)


class CountingEncoder:
    def __init__(self, dim=8):
        self.calls, self.dim = 0, dim

    def encode(self, texts):
        self.calls += 1
        g = torch.Generator().manual_seed(len(texts))
        return torch.randn(len(texts), self.dim, generator=g)


def test_explorer_builds_with_controls(ds, table_emb):
    ipywidgets = pytest.importorskip("ipywidgets")
    box = episode_explorer(ds, table_emb, n_query=3, n_way=2, k_shot=2, num_episodes=20, max_shot=3)
    assert isinstance(box, ipywidgets.VBox)
    c = box.controls
    assert set(c) == {"episode", "n_way", "k_shot", "part"}
    assert isinstance(c["episode"], ipywidgets.IntSlider) and c["episode"].max == 19
    assert c["n_way"].max == 2 and c["k_shot"].max == 3
    assert list(c["part"].options) == ["train", "valid", "test"] and c["part"].value == "test"
    image, table = box.children[3], box.children[4]
    assert bytes(image.value)[:4] == b"\x89PNG"
    assert "refund" in table.value and "cash" in table.value
    c["part"].value = "train"  # redraws
    assert "card_arrival" in table.value and "refund" not in table.value
    c["k_shot"].value = 3  # 3 + 3 queries = all 6 sentences: still fine
    assert table.value.count("<br>") > 0
    enc = CountingEncoder()
    box2 = episode_explorer(ds, enc, n_query=2, n_way=2)
    assert enc.calls == 1
    box2.controls["episode"].value = 3
    assert enc.calls == 2
    box3 = episode_explorer(ds, table_emb, n_query=2, n_way=2, episode=7)
    assert box3.controls["episode"].value == 7


def test_explorer_reports_impossible_settings(ds, table_emb):
    pytest.importorskip("ipywidgets")
    box = episode_explorer(ds, table_emb, n_query=3, n_way=2, k_shot=1, max_shot=5)
    box.controls["k_shot"].value = 5  # 5 + 3 > 6 sentences per class
    status = box.children[2]
    assert "fewer than k_shot + n_query" in status.value


def test_explorer_bad_input(ds, table_emb):
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="len\\(dataset\\)"):
        episode_explorer(ds, table_emb[:-1])
    with pytest.raises(TypeError, match="encode"):
        episode_explorer(ds, "minilm")
    with pytest.raises(ValueError, match="part"):
        episode_explorer(ds, table_emb, part="dev")
    with pytest.raises(ValueError, match="episode"):
        episode_explorer(ds, table_emb, num_episodes=5, episode=5)


def test_class_colors():
    assert len(set(class_colors(10))) == 10
    with pytest.raises(ValueError):
        class_colors(0)
    with pytest.raises(ValueError):
        class_colors(50)
