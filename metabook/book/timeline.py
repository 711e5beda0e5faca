"""Chapter 1's timeline of meta-learning and NLP pre-training: the works, and the figure.

:data:`WORKS` is the table behind the figure: one :class:`Work` per publication, with its
year, a short label, the lane it is drawn in and its key in the book's ``references.bib``.
The functions around it

* check the table against the bibliography (:func:`find_bib`, :func:`bib_keys`,
  :func:`missing_keys`);
* compute what the chapter's prose says about it (:func:`onsets`, :func:`timeline_facts`,
  :func:`adoption_sentence`), so that no year or count is typed in the text;
* draw it (:func:`place_labels`, :func:`draw_timeline`) and check the drawing
  (:func:`label_overlaps`).

matplotlib is imported only inside the functions that draw.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure

__all__ = ["Work", "WORKS", "LANES", "FAMILIES", "SPLIT", "works_table", "find_bib", "bib_keys",
           "missing_keys", "onsets", "timeline_facts", "adoption_sentence", "place_labels",
           "draw_timeline", "label_overlaps"]

#: The three families of meta-learning, as the book names them.
FAMILIES: tuple[str, ...] = ("metric", "optimization", "model-based")

#: The figure's lanes, top to bottom, with their colours.
LANES: dict[str, str] = {
    "origins": "#7f7f7f",
    "metric": "#1f77b4",
    "optimization": "#ff7f0e",
    "model-based": "#2ca02c",
    "NLP": "#d62728",
    "pre-training": "#9467bd",
}
_LANE_NAMES = {"NLP": "meta-learning\nin NLP", "pre-training": "NLP models,\npre-training"}

#: The year where the figure's x axis breaks; works before it are the field's early history.
SPLIT: int = 2010


@dataclass(frozen=True)
class Work:
    """One publication on the timeline.

    Attributes:
        year: year of the publication cited (of the preprint, for works only on arXiv).
        label: the short label drawn beside its marker.
        lane: one of :data:`LANES`.
        key: its key in ``references.bib``.
        approach: for a work in the ``"NLP"`` lane, the family of meta-learning it
            applies (one of :data:`FAMILIES`), or None for a benchmark, a data set or a
            method of none of the three.
    """

    year: int
    label: str
    lane: str
    key: str
    approach: str | None = None

    def __post_init__(self) -> None:
        if self.lane not in LANES:
            raise ValueError(f"{self.key}: lane {self.lane!r} is not one of {list(LANES)}")
        if self.approach is not None and self.approach not in FAMILIES:
            raise ValueError(f"{self.key}: approach {self.approach!r} is not one of {FAMILIES}")

    @property
    def family(self) -> str | None:
        """The family of meta-learning the work belongs to or applies, if any."""
        return self.lane if self.lane in FAMILIES else self.approach


#: The works of Chapter 1's timeline, sorted by year (then lane, then label).
#: HWU64 is placed at 2019, when it was presented; its proceedings appeared in 2021.
WORKS: tuple[Work, ...] = tuple(sorted([
    Work(1987, "Schmidhuber thesis", "origins", "schmidhuber1987evolutionary"),
    Work(1991, "Learned learning rule", "origins", "bengio1991learning"),
    Work(1998, "Learning to Learn", "origins", "thrun1998learning"),
    Work(2001, "LSTM learns to learn", "model-based", "hochreiter2001learning"),
    Work(2016, "Matching Networks", "metric", "vinyals2016matching"),
    Work(2017, "Prototypical Networks", "metric", "snell2017prototypical"),
    Work(2017, "Meta-LSTM optimizer", "optimization", "ravi2017optimization"),
    Work(2017, "MAML, first-order MAML", "optimization", "finn2017maml"),
    Work(2017, "Meta-SGD", "optimization", "li2017metasgd"),
    Work(2018, "Reptile", "optimization", "nichol2018reptile"),
    Work(2019, "MAML++", "optimization", "antoniou2019maml"),
    Work(2019, "iMAML", "optimization", "rajeswaran2019imaml"),
    Work(2020, "ANIL", "optimization", "raghu2020anil"),
    Work(2016, "MANN", "model-based", "santoro2016mann"),
    Work(2018, "SNAIL", "model-based", "mishra2018snail"),
    Work(2018, "Conditional neural processes", "model-based", "garnelo2018cnp"),
    Work(2018, "Meta-NMT", "NLP", "gu2018metanmt", "optimization"),
    Work(2018, "Multi-metric text cls.", "NLP", "yu2018diverse", "metric"),
    Work(2018, "FewRel", "NLP", "han2018fewrel"),
    Work(2019, "MAML on GLUE", "NLP", "dou2019investigating", "optimization"),
    Work(2019, "Induction Networks", "NLP", "geng2019induction", "metric"),
    Work(2019, "CLINC150", "NLP", "larson2019clinc150"),
    Work(2019, "HWU64", "NLP", "liu2021hwu64"),
    Work(2020, "BANKING77", "NLP", "casanueva2020banking77"),
    Work(2020, "Distributional signatures", "NLP", "bao2020distributional"),
    Work(2020, "SMLMT", "NLP", "bansal2020smlmt", "optimization"),
    Work(2020, "LEOPARD", "NLP", "bansal2020leopard", "optimization"),
    Work(2020, "Pre-training as meta-learning", "NLP", "lv2020pretraining", "optimization"),
    Work(2020, "DNNC", "NLP", "zhang2020dnnc"),
    Work(2021, "ProtAugment", "NLP", "dopierre2021protaugment", "metric"),
    Work(2021, "Reality check", "NLP", "dopierre2021reality"),
    Work(2021, "CPFT", "NLP", "zhang2021cpft"),
    Work(2022, "ContrastNet", "NLP", "chen2022contrastnet"),
    Work(2022, "Sentence encoders suffice", "NLP", "ma2022effectiveness"),
    Work(2022, "MetaICL", "NLP", "min2022metaicl", "model-based"),
    Work(1997, "LSTM", "pre-training", "hochreiter1997lstm"),
    Work(2013, "word2vec", "pre-training", "mikolov2013distributed"),
    Work(2014, "GloVe", "pre-training", "pennington2014glove"),
    Work(2017, "Transformer", "pre-training", "vaswani2017attention"),
    Work(2019, "BERT", "pre-training", "devlin2019bert"),
    Work(2019, "Sentence-BERT", "pre-training", "reimers2019sbert"),
    Work(2020, "MiniLM", "pre-training", "wang2020minilm"),
    Work(2020, "GPT-3, in-context learning", "pre-training", "brown2020gpt3"),
], key=lambda w: (w.year, list(LANES).index(w.lane), w.label)))


def works_table(works: Sequence[Work] = WORKS) -> str:
    """The works as a Markdown table: year, label, lane, family applied, bib key."""
    rows = ["| year | work | lane | family | key |", "|---:|---|---|---|---|"]
    for w in works:
        rows.append(f"| {w.year} | {w.label} | {w.lane} | {w.family or ''} | `{w.key}` |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------
# the bibliography
def find_bib(start: str | os.PathLike | None = None, name: str = "references.bib") -> Path | None:
    """The nearest ``references.bib`` in ``start`` (default: the working folder) or above it."""
    here = Path(start) if start is not None else Path.cwd()
    for folder in (here.resolve(), *here.resolve().parents):
        if (folder / name).is_file():
            return folder / name
    return None


def bib_keys(path: str | os.PathLike) -> set[str]:
    """The entry keys of a BibTeX file (``@article{key,`` -> ``key``)."""
    text = Path(path).read_text(encoding="utf-8")
    return set(re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", text, re.M))


def missing_keys(works: Iterable[Work], path: str | os.PathLike) -> list[str]:
    """The keys of ``works`` that ``path`` (a BibTeX file) does not define, in order."""
    keys = bib_keys(path)
    return [w.key for w in works if w.key not in keys]


# --------------------------------------------------------------------------------------
# what the prose says about the table
def onsets(works: Sequence[Work] = WORKS, since: int = SPLIT) -> dict[str, dict[str, Work]]:
    """For each family: its first work from ``since`` on, and its first use in NLP.

    Returns ``{family: {"first": work, "nlp": work}}``; ``"nlp"`` is the earliest work of
    the ``"NLP"`` lane that applies the family, and is absent when there is none. Ties
    in year go to the work listed first.
    """
    out: dict[str, dict[str, Work]] = {}
    for fam in FAMILIES:
        general = [w for w in works if w.lane == fam and w.year >= since]
        nlp = [w for w in works if w.lane == "NLP" and w.approach == fam]
        entry = {}
        if general:
            entry["first"] = min(general, key=lambda w: w.year)
        if nlp:
            entry["nlp"] = min(nlp, key=lambda w: w.year)
        out[fam] = entry
    return out


def timeline_facts(works: Sequence[Work] = WORKS, since: int = SPLIT) -> dict[str, int]:
    """The counts and years the chapter's text quotes, for ``glue``.

    Keys: ``n_works``, ``n_nlp`` (works in the NLP lane), ``first_year``, ``last_year``,
    ``early_first``/``early_last`` (the meta-learning works before ``since``),
    ``families_first``/``families_last`` (the years of the families' first works from
    ``since`` on) and ``nlp_first`` (the first work in the NLP lane).
    """
    if not works:
        raise ValueError("no works")
    years = [w.year for w in works]
    early = [w.year for w in works if w.year < since and w.lane != "pre-training"]
    first = [e["first"].year for e in onsets(works, since).values() if "first" in e]
    nlp = [w.year for w in works if w.lane == "NLP"]
    if not (early and first and nlp):
        raise ValueError("the works need early meta-learning, family and NLP entries")
    return dict(n_works=len(works), n_nlp=len(nlp), first_year=min(years),
                last_year=max(years), early_first=min(early), early_last=max(early),
                families_first=min(first), families_last=max(first), nlp_first=min(nlp))


def _labels(ws: list[Work]) -> str:
    return "; ".join(w.label for w in ws)  # (labels may contain commas)


def adoption_sentence(works: Sequence[Work] = WORKS, since: int = SPLIT) -> str:
    """Markdown: when each family began, and how many years later NLP took it up.

    The families are listed from the quickest adoption to the slowest.
    """
    found = onsets(works, since)
    starts = []
    for fam in FAMILIES:
        if "first" not in found[fam]:
            continue
        year = found[fam]["first"].year
        firsts = [w for w in works if w.lane == fam and w.year == year]
        starts.append(f"the {fam} family in {year} ({_labels(firsts)})")
    years = [e["first"].year for e in found.values() if "first" in e]
    text = (f"The three families took shape between {min(years)} and {max(years)}: "
            + ", ".join(starts) + ".")
    gaps = sorted((e["nlp"].year - e["first"].year, fam, e["nlp"])
                  for fam, e in found.items() if "first" in e and "nlp" in e)
    if gaps:
        parts = [f"the {fam} family {gap} year{'s' if gap != 1 else ''} later "
                 f"({w.label}, {w.year})" for gap, fam, w in gaps]
        text += " NLP took up " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") \
            + parts[-1] + "."
    return text


# --------------------------------------------------------------------------------------
# the figure
PANELS: tuple[tuple[float, float], tuple[float, float]] = ((1984.5, 2003.5), (2012.5, 2025.8))
_FONT = 8


def _panel(year: int) -> int:
    return 0 if year < SPLIT else 1


def place_labels(works: Sequence[Work], widths: Mapping[str, float],
                 panels: Sequence[tuple[float, float]] = PANELS, gap: float = 0.3,
                 pad: float = 0.15) -> dict[str, tuple[int, bool]]:
    """Give each work a sub-row of its lane and a side for its label, so labels do not collide.

    Within each lane and panel, works are taken by year; each label goes to the first
    sub-row where it fits, to the right of its marker, or to its left where it would run
    past the panel's right edge.

    Args:
        works: the works to place.
        widths: each work's label width, in years on its panel, by ``key``.
        panels: the x limits (in years) of the early and the late panel.
        gap: years kept free between labels and markers of one sub-row.
        pad: years between a marker and its label.

    Returns:
        ``{key: (sub_row, label_on_the_right)}``.
    """
    placed: dict[str, tuple[int, bool]] = {}
    taken: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for w in sorted(works, key=lambda w: (w.year, w.label)):
        p = _panel(w.year)
        lo_lim, hi_lim = panels[p]
        width = widths[w.key]
        right = w.year + pad + width < hi_lim or w.year - pad - width < lo_lim
        lo, hi = (w.year, w.year + pad + width) if right else (w.year - pad - width, w.year)
        row = 0
        while any(lo - gap < b and a < hi + gap for a, b in taken.get((w.lane, p, row), [])):
            row += 1
        taken.setdefault((w.lane, p, row), []).append((lo, hi))
        placed[w.key] = (row, right)
    return placed


def draw_timeline(works: Sequence[Work] = WORKS, figsize: tuple[float, float] = (8, 7.2),
                  dpi: int = 110) -> "matplotlib.figure.Figure":
    """Draw the works in lanes on a broken year axis (before and after :data:`SPLIT`).

    Each label's width is measured in the rendered figure, then :func:`place_labels`
    stacks the labels of a lane in as many sub-rows as they need.
    """
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    works = list(works)
    keys = [w.key for w in works]
    if len(set(keys)) != len(keys):
        raise ValueError("two works share a key")
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True, dpi=dpi,
                             gridspec_kw=dict(width_ratios=[1, 2.2], wspace=0.04))
    fig.subplots_adjust(left=0.15, right=0.97)  # room for the lane names on the left
    for ax, lim in zip(axes, PANELS):
        ax.set_xlim(*lim)

    # 1. each label's width, in years on its panel (with a margin: rendering varies)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    widths = {}
    for w in works:
        ax = axes[_panel(w.year)]
        t = ax.text(w.year, 0, w.label, fontsize=_FONT)
        box = t.get_window_extent(renderer).transformed(ax.transData.inverted())
        widths[w.key] = 1.1 * box.width
        t.remove()
    placed = place_labels(works, widths)

    # 2. stack the lanes, top to bottom, each as tall as its sub-rows
    row_h, lane_pad = 1.0, 0.9
    lanes = [lane for lane in LANES if any(w.lane == lane for w in works)]
    top, y = {}, 0.0
    for lane in lanes:
        top[lane] = y
        y -= (1 + max(placed[w.key][0] for w in works if w.lane == lane)) * row_h + lane_pad
    for w in works:
        ax = axes[_panel(w.year)]
        row, right = placed[w.key]
        yy = top[w.lane] - row * row_h - 0.5
        ax.plot(w.year, yy, "o", ms=5, color=LANES[w.lane], zorder=3)
        ax.annotate(w.label, (w.year, yy), xytext=(4 if right else -4, 0),
                    textcoords="offset points", fontsize=_FONT, va="center",
                    ha="left" if right else "right", color="0.1")
    trans = blended_transform_factory(axes[0].transAxes, axes[0].transData)
    for lane in lanes:
        bottom = top[lane] - (1 + max(placed[w.key][0] for w in works if w.lane == lane)) * row_h
        for ax in axes:
            ax.axhspan(bottom - 0.1, top[lane] + 0.1, color=LANES[lane], alpha=0.07, lw=0)
        axes[0].text(-0.04, (top[lane] + bottom) / 2, _LANE_NAMES.get(lane, lane),
                     transform=trans, ha="right", va="center", fontsize=9,
                     color=LANES[lane], fontweight="bold")

    # 3. axes, with the usual diagonal marks of a broken axis
    axes[0].set_xticks([1987, 1991, 1995, 1999, 2003])
    axes[1].set_xticks(range(2013, 2024, 2))
    for ax in axes:
        ax.set_yticks([])
        ax.grid(axis="x", color="0.85", lw=0.6)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].spines["right"].set_visible(False)
    axes[1].spines["left"].set_visible(False)
    for ax, x in ((axes[0], 1), (axes[1], 0)):
        k = 0.012 * (1 if x else 2.2)
        for yb in (0, 1):
            ax.plot([x - k, x + k], [yb - 0.01, yb + 0.01], transform=ax.transAxes,
                    color="k", lw=0.8, clip_on=False)
    axes[0].set_ylim(y + lane_pad - 0.4, 0.4)
    years = [w.year for w in works]
    fig.suptitle(f"{len(works)} works on meta-learning and NLP pre-training, "
                 f"{min(years)}–{max(years)}", fontsize=10, y=0.93)
    return fig


def label_overlaps(fig: "matplotlib.figure.Figure") -> list[tuple[str, str]]:
    """Pairs of text labels (annotations) whose rendered boxes overlap, or that leave
    their panel; ``[]`` for a clean figure.

    A label leaving its panel is reported as ``(label, "<outside>")``.
    """
    if not hasattr(fig.canvas, "get_renderer"):  # e.g. closed by the notebook's inline backend
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        for t in ax.texts:
            if type(t).__name__ != "Annotation":
                continue
            box = t.get_window_extent(renderer)
            if not t.get_visible() or box.width <= 1:  # not drawn (e.g. its point is clipped)
                continue
            boxes.append((t.get_text(), box))
            if box.x0 < frame.x0 - 0.5 or box.x1 > frame.x1 + 0.5:
                boxes.append((t.get_text(), None))
    out = [(name, "<outside>") for name, box in boxes if box is None]
    real = [(name, box) for name, box in boxes if box is not None]
    for i, (a, ba) in enumerate(real):
        for b, bb in real[i + 1:]:
            if ba.overlaps(bb):
                out.append((a, b))
    return out
