"""metabook.bench.stats: t-intervals, packed per-episode accuracies, paired differences."""
import numpy as np
import pytest
from scipy import stats as sps

from metabook.bench.stats import pack_accuracies, paired_difference, t_interval, unpack_accuracies


def test_t_interval_matches_scipy_and_is_wider_than_normal():
    v = [84.1, 86.0, 83.2, 85.7, 84.9]
    m, h = t_interval(v)
    lo, hi = sps.t.interval(0.95, df=4, loc=np.mean(v), scale=sps.sem(v))
    assert m == pytest.approx(np.mean(v)) and h == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert h > 1.96 * np.std(v, ddof=1) / np.sqrt(5)  # t_4 > z


@pytest.mark.parametrize("bad", [[], [1.0]])
def test_t_interval_needs_two_values(bad):
    with pytest.raises(ValueError, match="at least 2"):
        t_interval(bad)


def test_pack_round_trips_and_is_compact():
    rng = np.random.default_rng(0)
    accs = rng.integers(0, 26, size=3000) * 4.0  # 25 queries per episode
    packed = pack_accuracies(accs, 25)
    assert np.array_equal(unpack_accuracies(packed, 25), accs)
    assert len(packed) < 6000


def test_pack_refuses_fractional_counts():
    with pytest.raises(ValueError, match="whole numbers"):
        pack_accuracies([50.0, 33.3], 25)
    with pytest.raises(ValueError, match="n_query_total"):
        pack_accuracies([50.0], 0)


def test_paired_difference_is_mean_of_split_differences():
    base = [[80.0, 84.0, 88.0], [70.0, 72.0, 74.0]]
    meth = [[84.0, 84.0, 92.0], [70.0, 76.0, 74.0]]
    d = paired_difference(meth, base)
    assert d["split_diffs"] == pytest.approx([8 / 3, 4 / 3])
    assert d["mean"] == pytest.approx(2.0) and d["ci95"] == pytest.approx(t_interval([8 / 3, 4 / 3])[1])
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError, match="same, non-zero number"):
        paired_difference(meth, base[:1])
