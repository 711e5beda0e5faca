"""EpisodeSampler: invariants, determinism and clear errors on bad input."""
import numpy as np
import pytest
import torch

from metabook import Episode, EpisodeSampler, SinusoidTasks, stack_episodes

LABELS = np.repeat(np.arange(10), [8, 8, 8, 8, 8, 8, 8, 8, 8, 20])
DATA = torch.arange(len(LABELS), dtype=torch.float32)[:, None] * 10


def test_episode_invariants():
    s = EpisodeSampler(LABELS, n_way=5, k_shot=2, n_query=3, data=DATA, seed=0)
    for ep in (s.episode(i) for i in range(50)):
        assert ep.support_x.shape == (10, 1) and ep.query_x.shape == (15, 1)
        assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert ep.query_y.tolist() == sorted([0, 1, 2, 3, 4] * 3)
        assert len(set(ep.classes)) == 5
        s_idx, q_idx = ep.support_idx.tolist(), ep.query_idx.tolist()
        assert not set(s_idx) & set(q_idx), "support and query overlap"
        assert len(set(s_idx + q_idx)) == 25, "an example was drawn twice"
        for idx, y in zip(s_idx + q_idx, ep.support_y.tolist() + ep.query_y.tolist()):
            assert LABELS[idx] == ep.classes[y], "label remapping broken"
        torch.testing.assert_close(ep.support_x[:, 0], ep.support_idx.float() * 10)


def test_determinism_and_random_access():
    a = EpisodeSampler(LABELS, 5, 1, 2, seed=7, num_episodes=20)
    b = EpisodeSampler(LABELS, 5, 1, 2, seed=7, num_episodes=20)
    c = EpisodeSampler(LABELS, 5, 1, 2, seed=8, num_episodes=20)
    ea, eb, ec = list(a), list(b), list(c)
    assert len(ea) == 20
    assert all(torch.equal(x.support_idx, y.support_idx) and x.classes == y.classes for x, y in zip(ea, eb))
    assert any(not torch.equal(x.support_idx, y.support_idx) for x, y in zip(ea, ec))
    assert torch.equal(a.episode(13).query_idx, ea[13].query_idx)


def test_every_class_gets_sampled_and_endless_iteration():
    s = EpisodeSampler(LABELS, 3, 1, 1, seed=0)
    it = iter(s)
    seen = {c for _ in range(200) for c in next(it).classes}
    assert seen == set(range(10))
    with pytest.raises(TypeError, match="endless"):
        len(s)


def test_batches_stack_for_vmap():
    s = EpisodeSampler(LABELS, 4, 2, 3, data=DATA, seed=0, num_episodes=10)
    b = s.batch(6)
    assert b.batched and b.support_x.shape == (6, 8, 1) and b.query_y.shape == (6, 12)
    assert len(list(s.batches(4))) == 2
    torch.testing.assert_close(b.support_x[2], s.episode(2).support_x)
    moved = b.to("cpu")
    assert isinstance(moved, Episode) and moved.support_x.device.type == "cpu"


def test_text_data_and_class_subset():
    texts = [f"sentence {i}" for i in range(len(LABELS))]
    s = EpisodeSampler(LABELS.tolist(), 2, 1, 1, data=texts, classes=[3, 9], seed=0)
    ep = s.episode(0)
    assert set(ep.classes) == {3, 9} and all(isinstance(t, str) for t in ep.support_x)
    stacked = stack_episodes([s.episode(0), s.episode(1)])
    assert len(stacked.support_x) == 2 and isinstance(stacked.support_x[0], list)


def test_string_labels():
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    ep = EpisodeSampler(labels, 3, 2, 2, seed=0).episode(0)
    assert sorted(ep.classes) == ["a", "b", "c"]


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(n_way=11), ValueError, "n_way=11 is larger"),
    (dict(n_way=0), ValueError, "n_way must be >= 1"),
    (dict(k_shot=0), ValueError, "k_shot must be >= 1"),
    (dict(n_query=-2), ValueError, "n_query must be >= 1"),
    (dict(n_way=2.0), TypeError, "n_way must be an int"),
    (dict(k_shot=True), TypeError, "k_shot must be an int"),
    (dict(n_query="5"), TypeError, "n_query must be an int"),
    (dict(k_shot=5, n_query=5), ValueError, r"class 0 has 8 examples, fewer than k_shot \+ n_query = 10"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(num_episodes=0), ValueError, "num_episodes must be >= 1"),
])
def test_bad_input_gets_a_clear_error(kw, exc, msg):
    args = dict(labels=LABELS, n_way=5, k_shot=1, n_query=1) | kw
    with pytest.raises(exc, match=msg):
        EpisodeSampler(**args)


def test_bad_labels_and_data():
    with pytest.raises(TypeError, match="labels must be a sequence"):
        EpisodeSampler("abc", 1, 1, 1)
    with pytest.raises(ValueError, match="labels is empty"):
        EpisodeSampler([], 1, 1, 1)
    with pytest.raises(TypeError, match=r"labels\[1\] = 0.5"):
        EpisodeSampler([1, 0.5], 1, 1, 1)
    with pytest.raises(ValueError, match="data has 3 items but labels has"):
        EpisodeSampler(LABELS, 2, 1, 1, data=[1, 2, 3])
    with pytest.raises(ValueError, match=r"classes: \[42\] do not occur"):
        EpisodeSampler(LABELS, 2, 1, 1, classes=[1, 42])


def test_small_classes_can_be_dropped_but_never_shrink_an_episode():
    s = EpisodeSampler(LABELS, 1, 10, 10, drop_small_classes=True)
    assert s.classes == [9]
    with pytest.raises(ValueError, match="n_way=2 is larger than the number of usable classes"):
        EpisodeSampler(LABELS, 2, 10, 10, drop_small_classes=True)


def test_sinusoid_family():
    fam = SinusoidTasks(seed=3)
    ep = fam.batch(25, 10, 5, index=4)
    assert ep.support_x.shape == (25, 10, 1) and ep.query_y.shape == (25, 5, 1)
    assert ep.support_x.abs().max() <= 5
    for (a, p), x, y in zip(ep.classes, ep.support_x, ep.support_y):
        assert 0.1 <= a <= 5 and 0 <= p <= np.pi
        torch.testing.assert_close(y, a * torch.sin(x - p))
    assert torch.equal(fam.batch(25, 10, 5, index=4).support_x, ep.support_x)
    assert not torch.equal(fam.batch(25, 10, 5, index=5).support_x, ep.support_x)
    with pytest.raises(ValueError, match="amplitude"):
        SinusoidTasks(amplitude=(5, 1))
