"""The committed benchmark results, as the chapters show them.

``python -m metabook.bench`` writes one JSON file per result to ``benchmarks/results/``
in the repository. This module is the book's one reader of those files: it finds the
folder beside the book (:func:`results_dir`), loads the files (:class:`Results`, which
remembers what it read, for the list of sources), and renders the tables and the
sentences that Chapters 5, 8 and 9 show. The loading and the README's tables are
``metabook.bench.report``'s, reused here.

It re-exports :data:`PUBLISHED`, the published full-way numbers the book compares with,
each with the source it was read from (``metabook.bench.report.PUBLISHED``).

A chapter uses it as::

    from metabook.book import results
    res = results.Results()          # benchmarks/results/ of this clone
    display(Markdown(results.episodic_table(res)))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from metabook.bench import report

__all__ = ["PUBLISHED", "UNVERIFIED", "FULLWAY_SHOTS", "NAMES", "HEADS", "results_dir", "Results",
           "pm", "markdown_table", "shot", "episodic_table", "training_note", "heads_table",
           "valid_histories", "best_step_correlation", "best_step_sentence", "plot_valid_curves",
           "fullway_table", "fullway_gaps", "shot_settings", "speed_tables", "encoder_table",
           "max_eval_seconds", "provenance", "episodic_headline", "fullway_headline",
           "speed_headline", "heads_sentence", "anchors_sentence", "reruns", "rerun_table",
           "rerun_sentence", "summary_table", "published_table", "paired_verdict", "paired",
           "fewshot_table", "fewshot_goals"]

#: Dataset names as the tables print them (``banking77`` -> ``BANKING77``).
NAMES: dict[str, str] = report.NAMES
#: The head learners of the episodic benchmark (``--algo maml`` etc.).
HEADS: tuple[str, ...] = report.HEADS
#: The shots per intent of the full-way protocol, in the order of :data:`PUBLISHED`'s pairs.
FULLWAY_SHOTS: tuple[int, int] = (5, 10)
#: Published full-way accuracy in percent at K = 5 and 10 on the DNNC/CPFT splits; per method
#: its ``cite`` key, ``year``, ``encoder`` (as the source states it), ``source`` and ``accuracy``.
PUBLISHED: dict[str, dict[str, Any]] = report.PUBLISHED
#: Episodic anchors that could not be verified from a source, with the reason; none is a target.
UNVERIFIED: dict[str, str] = report.UNVERIFIED

_NBSP_PM = "\u00a0±\u00a0"  # keeps "89.51 ± 0.33" on one line in a table


def results_dir(start: str | Path | None = None) -> Path:
    """``benchmarks/results`` of the repository this book runs in.

    Looks in ``start`` (default: the working directory, i.e. the notebook's folder) and
    each folder above it, then beside the ``metabook`` package (an editable install).

    Raises:
        FileNotFoundError: outside a clone of the repository (e.g. a pip install in Colab).
    """
    import metabook

    start = Path(start or Path.cwd()).resolve()
    candidates = [p / "benchmarks" / "results" for p in (start, *start.parents)]
    candidates.append(Path(metabook.__file__).resolve().parents[1] / "benchmarks" / "results")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"no benchmarks/results/ folder above {start} or beside metabook "
        f"({candidates[-1].parent.parent}). The results tables read the JSON files committed "
        "with the repository: run this notebook from a clone "
        "(git clone https://github.com/metabook-dev/metabook).")


class Results:
    """The result files of one ``benchmarks/results`` folder; remembers which were read.

    Args:
        folder: the folder; default :func:`results_dir`.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else results_dir()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not a folder of benchmark results")
        #: ``{file name: parsed JSON}`` of every file read so far, in reading order.
        self.used: dict[str, dict] = {}

    def get(self, name: str) -> dict | None:
        """The parsed file ``name`` (e.g. ``"encoder.json"``), or None if it is absent."""
        record = report._load(self.folder, name)
        if record is not None:
            self.used.setdefault(name, record)
        return record

    def load(self, name: str) -> dict:
        """Like :meth:`Results.get`, but a missing file is an error that names the file."""
        record = self.get(name)
        if record is None:
            raise FileNotFoundError(f"{self.folder / name} is missing: the book reads it from the "
                                    "committed results (`python -m metabook.bench --help` lists "
                                    "the commands that write them)")
        return record

    def episodic(self, data: str, algo: str, required: bool = False) -> dict | None:
        """``episodic_<data>_<algo>.json`` (``algo`` may be a variant, e.g. ``frozen-cl2n``)."""
        name = f"episodic_{data}_{algo}.json"
        return self.load(name) if required else self.get(name)

    def fullway(self, data: str, algo: str, required: bool = False) -> dict | None:
        """``fullway_<data>_<algo>.json``."""
        name = f"fullway_{data}_{algo}.json"
        return self.load(name) if required else self.get(name)

    def names(self) -> list[str]:
        """Every result file of the folder (not the reruns), sorted."""
        return sorted(p.name for p in self.folder.glob("*.json"))


# ------------------------------------------------------------------ formatting
def pm(mean: float, ci: float, digits: int = 2, signed: bool = False) -> str:
    """``"89.51 ± 0.33"`` (non-breaking spaces); ``signed`` writes ``"+0.12 ± 0.30"``."""
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f}{_NBSP_PM}{ci:.{digits}f}"


def markdown_table(header: tuple | list, rows: list) -> str:
    """A Markdown table from a header and rows of cells (any values, shown with ``str``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def shot(record: dict | None, k: int, key: str = "") -> tuple[float, float] | None:
    """``(mean, half-width)`` of an episodic file's ``k``-shot summary (``key="_uncentered"``):
    the 95% t-interval over the split means, the unit that varies when the protocol is rerun."""
    s = report._shot(record, k, key)
    return None if s is None else report.split_interval(s)


def paired(record: dict | None, baseline: dict | None, k: int) -> tuple[float, float] | None:
    """``record`` minus ``baseline`` at ``k`` shots on the same test episodes: the mean of the
    paired split differences and its 95% t-interval (None where either file is missing)."""
    return report.paired_splits(report._shot(record, k), report._shot(baseline, k))


def _cell(x: tuple[float, float] | None) -> str:
    return "—" if x is None else pm(*x)


def _splits_note(record: dict) -> str:
    splits = record.get("splits") or [s["split"] for s in record.get("per_split", [])]
    episodes = record["summary"].get("1shot", {}).get("episodes")
    where = f"all {len(splits)}" if len(splits) >= 5 else "split " + ", ".join(splits)
    return where + (f" ({episodes:,})" if isinstance(episodes, int) else "")


# ------------------------------------------------------------------ episodic
_STRICT_ROWS = {"frozen": "frozen", "frozen-cl2n": "frozen + CL2N",
                "protonet-indomain": "meta-trained on the split's train intents (strict)"}
_CROSS_ROWS = {"protonet-xdata-strict": "other two datasets, overlapping intents removed",
               "protonet-xdata": "other two datasets only, overlap kept",
               "protonet": "other two datasets (overlap kept), then the split's train intents"}
_LEVER_ROWS = report.EPISODIC_LEVERS


def _label(record: dict, label: str) -> str:
    return label + (" + CL2N" if record["settings"].get("center") == "train" and "CL2N" not in label else "")


def episodic_table(res: Results) -> str:
    """The episodic 5-way table of Chapter 5, mean ± t-interval over the 5 split means.

    Rows per dataset: the strict protocol (frozen, frozen + CL2N, and MiniLM meta-trained on
    the split's train intents only), its paired difference from frozen, then the
    cross-dataset setting (labelled intents of the other two datasets, whose overlap with the
    target's test intents was not removed), each with its paired difference from frozen.
    """
    rows = []
    for d, name in NAMES.items():
        frozen = res.episodic(d, "frozen", True)
        res.episodic(d, "protonet-indomain", True)
        first = True
        for algo, label in _STRICT_ROWS.items():
            r = res.episodic(d, algo)
            if r is None:
                continue
            rows.append((name if first else "", _label(r, label), _cell(shot(r, 1)), _cell(shot(r, 5)),
                         _splits_note(r)))
            first = False
        strict = res.episodic(d, "protonet-indomain")
        rows.append(("", "Δ strict meta-trained − frozen (paired)",
                     *(pm(*paired(strict, frozen, k), signed=True) for k in (1, 5)), "same episodes"))
        for algo, label in _CROSS_ROWS.items():
            r = res.episodic(d, algo)
            if r is not None:
                cells = [f"{_cell(shot(r, k))} (Δ {pm(*paired(r, frozen, k), signed=True)})" for k in (1, 5)]
                rows.append(("", "cross-dataset: " + _label(r, label), *cells, _splits_note(r)))
        for algo, label in _LEVER_ROWS.items():
            r = res.episodic(d, algo)
            if r is not None:
                cells = [f"{_cell(shot(r, k))} (Δ {pm(*paired(r, frozen, k), signed=True)})" for k in (1, 5)]
                rows.append(("", "lever: " + label, *cells, _splits_note(r)))
    return markdown_table(("dataset", "MiniLM", "5-way 1-shot", "5-way 5-shot", "splits (episodes)"),
                          rows)


def training_note(record: dict) -> str:
    """One line on how a meta-trained episodic file was trained (start, steps, episodes, lr)."""
    st = record["settings"]
    init = ((record.get("init") or {}).get("meta_pretrain") or {}).get("datasets")
    start = f"from MiniLM meta-trained on {' + '.join(init)}, " if init else ""
    return (f"{start}{st['train_steps']} steps of {st['train_way']}-way {st['train_shot']}-shot "
            f"{st['train_query']}-query episodes, learning rate {st['lr']:g}, bottom "
            f"{st['freeze_layers']} layers frozen, selection every {st['val_every']} steps")


def heads_table(res: Results) -> str:
    """The meta-learned heads on frozen embeddings (``--algo maml`` etc.) that are committed."""
    rows = [(NAMES[d], a, _cell(shot(r, 1)), _cell(shot(r, 5)), _splits_note(r))
            for d in NAMES for a in HEADS if (r := res.episodic(d, a)) is not None]
    return markdown_table(("dataset", "head learner", "5-way 1-shot", "5-way 5-shot", "splits"), rows)


def valid_histories(res: Results, algo: str = "protonet") -> list[dict]:
    """Per run (dataset, split): the valid 1-shot accuracy against the step, and the best step.

    Returns:
        One dict per split of every dataset whose ``algo`` file records a history, with
        ``data``, ``split``, ``train_classes``, ``steps``, ``accuracy``, ``best_step`` and
        ``last_step``.
    """
    out = []
    for d in NAMES:
        r = res.episodic(d, algo)
        for s in (r or {}).get("per_split", []):
            h = s.get("meta_train", {}).get("history")
            if h:
                out.append({"data": d, "split": s["split"], "train_classes": s["train_classes"],
                            "steps": [p["step"] for p in h], "accuracy": [p["valid_acc_1shot"] for p in h],
                            "best_step": s["meta_train"]["best_step"], "last_step": h[-1]["step"]})
    return out


def best_step_correlation(histories: list[dict]) -> dict[str, dict]:
    """Pearson r (and p) between a split's number of train intents and its best step.

    Returns:
        ``{"all": {...}, "<data>": {...}}`` with ``r``, ``p`` and ``n``; a dataset appears only
        when its splits differ in their number of train intents (otherwise r is undefined).
    """
    from scipy.stats import pearsonr

    def corr(hs):
        x, y = [h["train_classes"] for h in hs], [h["best_step"] for h in hs]
        r, p = pearsonr(x, y)
        return {"r": float(r), "p": float(p), "n": len(hs)}

    out = {"all": corr(histories)}
    for d in dict.fromkeys(h["data"] for h in histories):
        hs = [h for h in histories if h["data"] == d]
        if len({h["train_classes"] for h in hs}) > 1:
            out[d] = corr(hs)
    return out


def _direction(r: float) -> str:
    if abs(r) < 0.2:
        return "no clear relation"
    return "more train intents went with a later best step" if r > 0 else \
        "more train intents went with an earlier best step"


def _p(p: float) -> str:
    return "p < 0.01" if p < 0.01 else f"p = {p:.2f}"


def best_step_sentence(histories: list[dict]) -> str:
    """What the histories say about train intents and the step of the best checkpoint."""
    c = best_step_correlation(histories)
    early = sum(h["best_step"] <= h["last_step"] / 2 for h in histories)
    text = (f"The best checkpoint came in the first half of training in {early} of "
            f"{len(histories)} runs. Across all {c['all']['n']} runs, the correlation between a "
            f"split's number of train intents and the step of its best checkpoint is "
            f"r = {c['all']['r']:+.2f} ({_direction(c['all']['r'])}, {_p(c['all']['p'])})")
    only = " the only dataset whose splits differ in size," if len(c) == 2 else ""
    within = [f"{NAMES[d]},{only} r = {v['r']:+.2f} over {v['n']} splits "
              f"({_direction(v['r'])}, {_p(v['p'])})" for d, v in c.items() if d != "all"]
    if within:
        text += "; within " + "; within ".join(within)
    ps = [v["p"] for v in c.values()]
    if all(p >= 0.05 for p in ps):
        return text + ". No correlation is significant at the 5% level: the runs show no trend."
    return text + "."


def plot_valid_curves(histories: list[dict]):
    """One panel per dataset: valid 5-way 1-shot accuracy against the step, a line per split.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(h["data"] for h in histories))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for h in (h for h in histories if h["data"] == d):
            ax.plot(h["steps"], h["accuracy"], "o-", ms=3,
                    label=f"split {h['split']}: {h['train_classes']} train intents")
        ax.set_title(NAMES[d], fontsize=10)
        ax.set_xlabel("meta-training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                  frameon=False)  # below the panel, off the curves
    axes[0][0].set_ylabel("valid 5-way 1-shot (%)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ full-way
_FULLWAY_ROWS = {"frozen": "frozen", "protonet": "meta-trained on the shots",
                 "protonet-xdata": "other datasets only, no shot training",
                 "protonet-smlmt": "SMLMT on unlabeled train text, then shots"}


def _fw(record: dict | None, k: int) -> str:
    s = None if record is None else record["results"].get(f"{k}shot")
    return "—" if s is None else f"{pm(*report.draw_interval(s))} ({len(s['draws'])} draws)"


def fullway_table(res: Results) -> str:
    """The full-way table on the official dataset files (BANKING77, CLINC150): every committed
    MiniLM variant, mean ± t-interval over the draws, then the published anchors."""
    rows = []
    for d, name in NAMES.items():
        if res.fullway(d, "frozen") is None:
            continue
        found = [(label, r) for a, label in _FULLWAY_ROWS.items() if (r := res.fullway(d, a))]
        rows += [(name if i == 0 else "", label, *(_fw(r, k) for k in FULLWAY_SHOTS))
                 for i, (label, r) in enumerate(found)]
        rows += [("", f"{m} ({p['year']}, published)", *(f"{a:.2f}" for a in p["accuracy"][d]))
                 for m, p in PUBLISHED.items()]
        gaps = fullway_gaps(res).get(d)
        if gaps:
            rows.append(("", "meta-trained − CPFT", *(f"{g:+.2f}" for g in gaps)))
    return markdown_table(("dataset", "model", *(f"{k}-shot" for k in FULLWAY_SHOTS)), rows)


def fullway_gaps(res: Results, method: str = "CPFT") -> dict[str, tuple[float, float]]:
    """``{data: (gap at 5 shots, gap at 10)}``: meta-trained MiniLM minus ``method``'s number."""
    out = {}
    for d, published in PUBLISHED[method]["accuracy"].items():
        r = res.fullway(d, "protonet")
        if r is not None:
            out[d] = tuple(r["results"][f"{k}shot"]["mean"] - a
                           for k, a in zip(FULLWAY_SHOTS, published))
    return out


def fewshot_table(res: Results) -> str:
    """The full-way tables on the DNNC/CPFT splits (``fewshot_intent/``): frozen prototypes,
    logistic regression and any meta-trained run, mean ± t-interval over 5 draws, CPFT and
    whether the best MiniLM method clears it; then each method on the published draw."""
    for d in NAMES:
        for a in report.FEWSHOT_ALGOS:
            res.get(f"fewshot_intent/fullway_{d}_{a}.json")  # listed among the sources
    return ("\n".join(report.fewshot_table(res.folder, published=False)) + "\n\nOn the published draw "
            "(`train_5` / `train_10`, the shots the anchors used; one draw, so no interval):\n\n"
            + "\n".join(report.published_draw_table(res.folder)))


def levers_table(res: Results) -> str:
    """The full-way levers on the DNNC/CPFT splits (label names, ensembles, a larger encoder),
    each paired with the MiniLM method it builds on; empty when none is committed."""
    for d in NAMES:
        for v in report.FEWSHOT_LEVERS:
            res.get(f"fewshot_intent/fullway_{d}_{v}.json")  # listed among the sources
    return "\n".join(report.levers_table(res.folder))


def claims_table(res: Results) -> str:
    """Where the meta-trained column may claim a gain: above logistic regression (paired over
    draws) and above SetFit (published draw); empty when the files are missing."""
    return "\n".join(report.claims_table(res.folder))


def peer_sentence(res: Results) -> str:
    """SetFit against logistic regression on the published draw, cell by cell, as one sentence."""
    cells, above = [], 0
    for d, name in NAMES.items():
        peer, logreg = (res.get(f"fewshot_intent/fullway_{d}_{a}.json") for a in ("setfit", "logreg"))
        if peer is None or logreg is None:
            continue
        for k in FULLWAY_SHOTS:
            a = peer["results"][f"{k}shot"]["published_draw"]
            b = logreg["results"][f"{k}shot"]["published_draw"]
            above += a > b
            cells.append(f"{name} {k}-shot {a:.2f} against {b:.2f}")
    if not cells:
        return "no SetFit run is committed yet"
    verdict = ("above logistic regression in every cell" if above == len(cells) else
               "below logistic regression in every cell" if above == 0 else
               f"above logistic regression in {above} of {len(cells)} cells")
    return f"SetFit scored {verdict} on the published draw ({'; '.join(cells)})"


def larger_encoder_sentence(res: Results, lever: str = "logreg-mpnet") -> str:
    """What the larger encoder changes: its paired gain over the MiniLM method it replaces, and
    its margin over CPFT, per dataset and K (one sentence, from the committed files)."""
    _, base_name, _ = report.FEWSHOT_LEVERS[lever]
    gains, gaps, met = [], [], 0
    for d, name in NAMES.items():
        r, base = (res.get(f"fewshot_intent/fullway_{d}_{a}.json") for a in (lever, base_name))
        if r is None or base is None:
            continue
        for i, k in enumerate(FULLWAY_SHOTS):
            gains.append(report.paired_draws(r, base, k)[0])
            m, h = report.draw_interval(r["results"][f"{k}shot"])
            cpft = PUBLISHED["CPFT"]["accuracy"][d][i]
            met += m - h > cpft
            gaps.append(f"{name} {k}-shot {m - cpft:+.2f} ± {h:.2f}")
    if not gains:
        return "no larger-encoder run is committed yet"
    verdict = ("clears CPFT in every cell" if met == len(gaps) else "clears CPFT nowhere" if met == 0
               else f"clears CPFT in {met} of {len(gaps)} cells")
    return (f"the larger encoder lifts {report._SHORT[base_name]} regression by {min(gains):+.2f} to "
            f"{max(gains):+.2f} points over MiniLM's (paired over the draws) and {verdict} "
            f"({'; '.join(gaps)})")


def recipe_sentence(res: Results, algo: str = "cpft", versus: str = "protonet") -> str:
    """``algo`` (CPFT's recipe on MiniLM) against ``versus`` (the meta-trained column), paired over
    the same draws, per dataset and K; one sentence from the committed files."""
    parts = []
    for d, name in NAMES.items():
        a, b = (res.get(f"fewshot_intent/fullway_{d}_{x}.json") for x in (algo, versus))
        if a is None or b is None:
            continue
        for k in FULLWAY_SHOTS:
            m, h = report.paired_draws(a, b, k)
            word = "above" if m - h > 0 else "below" if m + h < 0 else "level with"
            parts.append(f"{name} {k}-shot {word} it ({pm(m, h, signed=True)})")
    if not parts:
        return f"no {report.FEWSHOT_ALGOS[algo]} run is committed yet"
    return f"{report.FEWSHOT_ALGOS[algo]} against {report.FEWSHOT_ALGOS[versus]}, paired over the draws: " + "; ".join(parts)


def fewshot_goals(res: Results) -> dict[str, dict[int, tuple[str, float, float]]]:
    """``{data: {K: (best method, its mean − CPFT, t half-width)}}`` on the DNNC/CPFT splits."""
    return {d: {k: report.fewshot_goal(recs, d, k) for k in FULLWAY_SHOTS}
            for d, recs in report.fewshot_results(res.folder).items()}


def shot_settings(record: dict) -> str:
    """One line on how a full-way file fine-tuned on the shots."""
    st = record["settings"]
    return (f"shot fine-tuning: {st.get('shot_method', 'episodes')}, {st.get('shot_epochs')} "
            f"epochs, learning rate {st['lr']:g}, bottom {st['freeze_layers']} layers frozen")


# ------------------------------------------------------------------ speed, encoder
def speed_tables(res: Results) -> str:
    """The MAML meta-step tables, as the README shows them (``metabook.bench.report.speed_section``)."""
    for name, _ in report.SPEED:
        res.get(name)  # listed among the sources
    return "\n".join(report.speed_section(res.folder))


def _speed_rows(record: dict) -> dict[str, dict]:
    return {row["method"]: row for row in record["rows"]}


def encoder_table(res: Results) -> str:
    """MiniLM encoding throughput against sentence-transformers (``encoder.json``)."""
    enc = res.load("encoder.json")
    rows = [(name, r["batch_size"], f"{r['median_s']:.1f}", f"{r['sentences_per_s']:.0f}")
            for name, r in enc["throughput"].items()]
    return markdown_table(("encoder", "batch size", "median seconds", "sentences per second"), rows)


def max_eval_seconds(res: Results) -> tuple[float, str]:
    """The longest ProtoNet evaluation of 600 test episodes from cached embeddings, and its dataset."""
    times = [(s["max_eval_seconds"], NAMES[d]) for d in NAMES for a in ("frozen", "frozen-cl2n")
             for k in (1, 5) if (s := report._shot(res.episodic(d, a), k)) and "max_eval_seconds" in s]
    if not times:
        raise ValueError("no frozen episodic file records max_eval_seconds")
    return max(times)


# ------------------------------------------------------------------ sources
def _hardware(record: dict) -> str:
    hw, ver = record.get("hardware", {}), record.get("versions", {})
    parts = [hw.get("gpu") or hw.get("device", "?")]
    parts += [f"{hw['cpu_count']} CPUs"] if hw.get("cpu_count") else []
    parts += [f"{hw['torch_threads']} torch threads"] if hw.get("torch_threads") else []
    parts += [f"torch {ver['torch']}"] if ver.get("torch") else []
    return ", ".join(parts)


def provenance(res: Results) -> str:
    """A Markdown list of the files read so far: command, hardware and run time of each."""
    items = []
    for name, r in res.used.items():
        took = f", {r['seconds'] / 60:.1f} min" if r.get("seconds") else ""
        items.append(f"- `{name}`: `{r.get('command', '?')}` on {_hardware(r)}{took}")
    return "\n".join(items)


# ------------------------------------------------------------------ sentences
def episodic_headline(res: Results) -> str:
    """The strict meta-trained 5-way 1-shot accuracy per dataset, and its paired gain over frozen."""
    parts = []
    for d, name in NAMES.items():
        strict, frozen = res.episodic(d, "protonet-indomain", True), res.episodic(d, "frozen", True)
        (m, h), (g, gh) = shot(strict, 1), paired(strict, frozen, 1)
        parts.append(f"{name} {m:.1f} ± {h:.1f}% ({g:+.1f} ± {gh:.1f} over frozen)")
    return ("meta-trained on each split's train intents alone, MiniLM's 5-way 1-shot accuracy is "
            + "; ".join(parts))


def fullway_headline(res: Results) -> str:
    """Meta-trained full-way accuracy per dataset and K, against CPFT's published number."""
    parts = []
    for d, gaps in fullway_gaps(res).items():
        r = res.fullway(d, "protonet", True)["results"]
        for k, a, g in zip(FULLWAY_SHOTS, PUBLISHED["CPFT"]["accuracy"][d], gaps):
            parts.append(f"{NAMES[d]} {k}-shot {r[f'{k}shot']['mean']:.1f}% against CPFT's {a:.2f}% "
                         f"({'above' if g > 0 else 'below'} by {abs(g):.1f})")
    return "full-way accuracy is " + "; ".join(parts)


def speed_headline(res: Results) -> str:
    """metabook against higher: time per second-order meta-step, and the text head's memory."""
    mb, hi = (_speed_rows(res.load("maml_speed.json"))[m] for m in ("metabook", "higher"))
    out = (f"{mb['median_ms']:.0f} ms per second-order meta-step against {hi['median_ms']:.0f} ms "
           f"for higher on sinusoids ({mb['speedup_vs_higher']:.1f}× faster)")
    text = res.get("maml_speed_text.json")
    if text is not None:
        t = _speed_rows(text)
        out += (f"; on the text head {t['metabook']['speedup_vs_higher']:.1f}× faster, with "
                f"{t['metabook']['peak_mib'] / t['higher']['peak_mib']:.1f}× higher's peak memory")
    return out


def heads_sentence(res: Results, data: str = "banking77") -> str:
    """How the meta-learned heads on ``data`` compare with frozen prototypes at 1-shot."""
    frozen = shot(res.episodic(data, "frozen", True), 1)[0]
    heads = {a: shot(r, 1)[0] for a in HEADS if (r := res.episodic(data, a)) is not None}
    if not heads:
        raise ValueError(f"no head-learner file for {data} is committed")
    below = [a for a, m in heads.items() if m < frozen]
    best = max(heads, key=heads.get)
    return (f"On {NAMES[data]}, {len(below)} of the {len(heads)} head learners score below the "
            f"frozen prototypes at 5-way 1-shot ({frozen:.1f}%); the best, {best}, reaches "
            f"{heads[best]:.1f}%")


def anchors_sentence(res: Results) -> str:
    """Which goals are met: CPFT on the DNNC/CPFT splits, and the state of the episodic anchors."""
    goals = fewshot_goals(res)
    flat = [(d, k, g) for d, gs in goals.items() for k, g in gs.items()]
    met = [(d, k) for d, k, (_, gap, h) in flat if gap - h > 0]
    gaps = [gap for _, _, (_, gap, _) in flat]
    text = (f"on the splits CPFT reports on, the best MiniLM method clears CPFT's published "
            f"full-way accuracy in {len(met)} of {len(flat)} settings")
    if flat and len(met) < len(flat):
        text += f" (it falls short by {-max(gaps):.1f} to {-min(gaps):.1f} points)" if max(gaps) < 0 else ""
    return (text + "; no episodic anchor could be verified from a source, so the episodic rows are "
            "compared with the frozen encoder only")


def reruns(res: Results) -> list[dict]:
    """Committed episodic/full-way results against their reruns through the trainer.

    ``metabook.bench.rerun.compare`` on the folder: one row per rerun file and K.
    """
    from metabook.bench.rerun import compare

    return compare(res.folder)


def rerun_table(rows: list[dict]) -> str:
    """:func:`reruns`' rows as a table (``metabook.bench.rerun.table``)."""
    from metabook.bench.rerun import table

    return table(rows)


def rerun_sentence(rows: list[dict]) -> str:
    """How many reruns land within the earlier loop's 95% CI, and the largest paired difference."""
    if not rows:
        return "no rerun is committed yet"
    worst = max(rows, key=lambda r: abs(r["diff"][0]))
    return (f"{sum(r['within_ci'] for r in rows)} of the {len(rows)} reruns land within the "
            f"earlier result's 95% CI; the largest paired difference is "
            f"{worst['diff'][0]:+.2f} ± {worst['diff'][1]:.2f} points ({NAMES.get(worst['data'], worst['data'])} "
            f"{worst['algo']}, {worst['k']}-shot)")


def summary_table(res: Results) -> str:
    """Chapter 8's one table: frozen and the best MiniLM per protocol, beside the reference.

    Episodic rows: the strict meta-trained encoder against frozen, paired on the same episodes.
    Full-way rows (the DNNC/CPFT splits): the best MiniLM method against CPFT's number.
    """
    rows = []
    goals = fewshot_goals(res)
    for d, name in NAMES.items():
        frozen, strict = res.episodic(d, "frozen", True), res.episodic(d, "protonet-indomain", True)
        for k in (1, 5):
            rows.append((name, f"5-way {k}-shot", pm(*shot(frozen, k), 1),
                         f"meta-trained {pm(*shot(strict, k), 1)}", "frozen (paired)",
                         pm(*paired(strict, frozen, k), 1, signed=True)))
        recs = report.fewshot_results(res.folder).get(d, {})
        for k, a in zip(FULLWAY_SHOTS, PUBLISHED["CPFT"]["accuracy"][d]):
            if d not in goals or "frozen" not in recs:
                continue
            best, gap, h = goals[d][k]
            f = recs["frozen"]["results"][f"{k}shot"]
            b = recs[best]["results"][f"{k}shot"]
            rows.append((name, f"full-way {k}-shot", pm(*report.draw_interval(f), 1),
                         f"{report.FEWSHOT_ALGOS[best]} {pm(*report.draw_interval(b), 1)}",
                         f"CPFT {a:.2f}", pm(gap, h, 1, signed=True)))
    return markdown_table(("dataset", "protocol", "frozen MiniLM", "best MiniLM",
                           "reference", "best − reference"), rows)


def published_table() -> str:
    """:data:`PUBLISHED` as a table: a row per method (year), K = 5 / 10 per dataset, the
    encoder as its source states it, and the source."""
    return "\n".join(report.anchors_table())


def paired_verdict(diffs: dict[int, tuple[float, float]], better: str = "meta-trained",
                   baseline: str = "frozen") -> str:
    """One sentence on paired differences ``{K: (mean, ci95)}``: which intervals exclude zero."""
    zero = {k: abs(m) <= ci for k, (m, ci) in diffs.items()}
    up = {k: m > 0 for k, (m, _) in diffs.items()}
    subject, s = ("Both intervals", "") if len(diffs) == 2 else ("Every interval", "s")
    if all(zero.values()):
        return (f"{subject} contain{s} zero: this evaluation cannot tell the {better} and the "
                f"{baseline} encoder apart")
    if not any(zero.values()) and len(set(up.values())) == 1:
        way = "higher" if next(iter(up.values())) else "lower"
        return (f"{subject} exclude{s} zero: on these episodes the {better} encoder scores "
                f"{way} than the {baseline} one")
    parts = [f"at {k}-shot the interval " + ("contains zero" if zero[k] else
             f"excludes zero, with the {better} encoder " + ("higher" if up[k] else "lower"))
             for k in diffs]
    return "The shots disagree: " + "; ".join(parts)
