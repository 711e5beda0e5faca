"""metabook.book.timeline: Chapter 1's table of works, the sentences built from it, the figure."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from metabook.book import timeline  # noqa: E402
from metabook.book.timeline import WORKS, Work  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------- the table
def test_works_are_sorted_unique_and_cited():
    years = [w.year for w in WORKS]
    assert years == sorted(years)
    assert len({w.key for w in WORKS}) == len(WORKS)
    assert timeline.missing_keys(WORKS, REPO / "references.bib") == []


def test_only_nlp_works_carry_an_approach_and_corrections_are_kept():
    assert all(w.approach is None or w.lane == "NLP" for w in WORKS)
    by_key = {w.key: w for w in WORKS}
    assert by_key["finn2017maml"].year == 2017  # not "Google 2019"
    assert by_key["nichol2018reptile"].year == 2018
    assert by_key["snell2017prototypical"].lane == "metric"


def test_work_rejects_unknown_lane_and_approach():
    with pytest.raises(ValueError, match="lane"):
        Work(2020, "x", "vision", "k")
    with pytest.raises(ValueError, match="approach"):
        Work(2020, "x", "NLP", "k", "bayesian")
    assert Work(2020, "x", "metric", "k").family == "metric"
    assert Work(2020, "x", "NLP", "k", "optimization").family == "optimization"
    assert Work(2020, "x", "NLP", "k").family is None


def test_works_table_has_one_row_per_work():
    table = timeline.works_table(WORKS).splitlines()
    assert len(table) == 2 + len(WORKS)
    assert "`finn2017maml`" in table[2 + [w.key for w in WORKS].index("finn2017maml")]


# ---------------------------------------------------------------- the bibliography
def test_bib_keys_and_missing_keys(tmp_path):
    bib = tmp_path / "refs.bib"
    bib.write_text("@article{alpha2020,\n title={A}}\n  @misc{ beta2021 ,\n}\n% @book{gamma,\n",
                   encoding="utf-8")
    assert timeline.bib_keys(bib) == {"alpha2020", "beta2021"}
    works = [Work(2020, "a", "NLP", "alpha2020"), Work(2021, "g", "NLP", "gamma"),
             Work(2022, "d", "NLP", "delta")]
    assert timeline.missing_keys(works, bib) == ["gamma", "delta"]


def test_find_bib_looks_upwards(tmp_path):
    (tmp_path / "references.bib").write_text("", encoding="utf-8")
    deep = tmp_path / "book" / "ch01"
    deep.mkdir(parents=True)
    assert timeline.find_bib(deep) == (tmp_path / "references.bib").resolve()
    assert timeline.find_bib(deep, name="no-such-file.bib") is None
    assert timeline.find_bib(REPO / "book" / "ch01_background") == REPO / "references.bib"


# ---------------------------------------------------------------- facts and sentences
SMALL = [
    Work(1990, "old", "origins", "o1"),
    Work(1999, "pre", "pre-training", "p1"),
    Work(2016, "M1", "metric", "m1"),
    Work(2017, "O1", "optimization", "op1"),
    Work(2017, "O2", "optimization", "op2"),
    Work(2016, "B1", "model-based", "b1"),
    Work(2018, "nlp-opt", "NLP", "n1", "optimization"),
    Work(2020, "nlp-metric", "NLP", "n2", "metric"),
    Work(2019, "bench", "NLP", "n3"),
]


def test_timeline_facts_counts_and_years():
    facts = timeline.timeline_facts(SMALL)
    assert facts == dict(n_works=9, n_nlp=3, first_year=1990, last_year=2020, early_first=1990,
                         early_last=1990, families_first=2016, families_last=2017,
                         nlp_first=2018)
    with pytest.raises(ValueError):
        timeline.timeline_facts([])


def test_onsets_pick_the_earliest_work():
    found = timeline.onsets(SMALL)
    assert found["optimization"]["first"].key == "op1"
    assert found["optimization"]["nlp"].key == "n1"
    assert found["metric"]["nlp"].key == "n2"
    assert "nlp" not in found["model-based"]


def test_adoption_sentence_orders_by_gap_and_counts_years():
    text = timeline.adoption_sentence(SMALL)
    assert text.startswith("The three families took shape between 2016 and 2017:")
    assert "the optimization family in 2017 (O1; O2)" in text
    # optimization: 2017 -> 2018 (1 year), metric: 2016 -> 2020 (4 years), quickest first
    assert text.index("optimization family 1 year later") < text.index("metric family 4 years")
    assert "model-based family" not in text.split("NLP took up")[1]


def test_the_books_sentence_matches_the_table():
    found = timeline.onsets()
    gaps = {f: e["nlp"].year - e["first"].year for f, e in found.items()}
    text = timeline.adoption_sentence()
    for fam, gap in gaps.items():
        assert f"the {fam} family {gap} year" in text


# ---------------------------------------------------------------- layout and figure
def test_place_labels_stacks_colliding_labels():
    works = [Work(2018, "a", "NLP", "a"), Work(2018, "b", "NLP", "b"),
             Work(2018, "c", "metric", "c"), Work(2022, "d", "NLP", "d")]
    widths = {"a": 2.0, "b": 2.0, "c": 2.0, "d": 1.0}
    placed = timeline.place_labels(works, widths)
    assert placed["a"][0] != placed["b"][0]  # same year, same lane: two sub-rows
    assert placed["c"][0] == 0  # another lane starts its own rows
    assert placed["d"][0] == 0  # far enough to the right of a's label
    near_edge = timeline.place_labels([Work(2025, "e", "NLP", "e")], {"e": 3.0})
    assert near_edge["e"] == (0, False)  # would run past the panel: label on the left


def test_draw_timeline_places_every_work_without_overlap():
    fig = timeline.draw_timeline()
    markers = sum(len(line.get_xdata()) for ax in fig.axes for line in ax.lines
                  if line.get_marker() == "o")
    assert markers == len(WORKS)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts if type(t).__name__ == "Annotation"]
    assert sorted(texts) == sorted(w.label for w in WORKS)
    assert timeline.label_overlaps(fig) == []


def test_draw_timeline_rejects_duplicate_keys():
    with pytest.raises(ValueError, match="key"):
        timeline.draw_timeline([Work(2018, "a", "NLP", "k"), Work(2019, "b", "NLP", "k")])


def test_label_overlaps_finds_collisions_and_escapes():
    fig, ax = plt.subplots()
    ax.set(xlim=(0, 10), ylim=(0, 10))
    ax.annotate("first label", (5, 5))
    ax.annotate("second label", (5, 5))
    ax.annotate("far", (1, 1))
    assert timeline.label_overlaps(fig) == [("first label", "second label")]
    ax.annotate("a label that runs out of its panel", (9.5, 3))
    assert ("a label that runs out of its panel", "<outside>") in timeline.label_overlaps(fig)
    ax.annotate("not drawn: its point is outside the axes", (5, 50))
    assert not any("not drawn" in pair[0] for pair in timeline.label_overlaps(fig))


def test_label_overlaps_works_on_a_closed_figure():
    fig, ax = plt.subplots()
    ax.annotate("x", (0.5, 0.5))
    plt.close(fig)
    from matplotlib.backend_bases import FigureCanvasBase
    FigureCanvasBase(fig)  # what the inline backend leaves behind
    assert timeline.label_overlaps(fig) == []
