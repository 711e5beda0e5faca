"""metabook.book.results: the book's one reader of benchmarks/results/."""
import json
import re
from pathlib import Path

import pytest

import metabook
from metabook.bench.report import CPFT
from metabook.book import results

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "benchmarks" / "results"


# ---------------------------------------------------------------- a synthetic folder
SPREAD = (-2.0, -1.0, 0.0, 1.0, 2.0)  # split means around the mean: t half-width 2.776 * sqrt(2.5) / sqrt(5)
T_HALF = 2.7764451051977987 * (2.5 ** 0.5) / (5 ** 0.5)


def episodic(mean1, mean5, *, uncentered=False, best_steps=None, train_classes=25, init=None):
    """A minimal episodic result file as python -m metabook.bench episodic writes it."""
    summary = {"1shot": {"mean": mean1, "ci95": 0.4, "episodes": 3000, "max_eval_seconds": 0.3,
                         "split_means": [mean1 + s for s in SPREAD]},
               "5shot": {"mean": mean5, "ci95": 0.2, "episodes": 3000,
                         "split_means": [mean5 + s / 2 for s in SPREAD]}}
    if uncentered:
        summary["1shot_uncentered"] = {"mean": mean1 - 0.5, "ci95": 0.4, "episodes": 3000}
        summary["5shot_uncentered"] = {"mean": mean5 - 0.5, "ci95": 0.2, "episodes": 3000}
    per_split = []
    for i, best in enumerate(best_steps or []):
        classes = train_classes[i] if isinstance(train_classes, list) else train_classes
        history = [{"step": s, "valid_acc_1shot": 80.0 + (s == best)} for s in (0, 50, 100, 150, 200)]
        per_split.append({"split": f"0{i + 1}", "train_classes": classes,
                          "meta_train": {"best_step": best, "history": history}})
    settings = {"train_steps": 200, "train_way": 5, "train_shot": 2, "train_query": 3, "lr": 3e-5,
                "freeze_layers": 2, "val_every": 50, "center": "train" if uncentered else None}
    return {"benchmark": "episodic", "command": "python -m metabook.bench episodic", "n_way": 5,
            "splits": ["01", "02", "03", "04", "05"], "episodes_per_split": 600, "summary": summary,
            "per_split": per_split, "settings": settings, "init": init, "seconds": 60.0,
            "hardware": {"device": "cpu", "cpu_count": 2, "torch_threads": 2},
            "versions": {"torch": "2.13.0"}}


def fullway(mean5, mean10, splits="official"):
    return {"benchmark": "fullway", "command": "python -m metabook.bench fullway", "classes": 77,
            "splits": splits,
            "settings": {"k_shot": [5, 10], "draws": 5, "shot_method": "fullway", "shot_epochs": 4,
                         "lr": 5e-5, "freeze_layers": 2},
            "results": {f"{k}shot": {"mean": m, "std": 0.5, "ci95": 0.6, "published_draw": m + 0.5,
                                     "draws": [m + s for s in SPREAD]}
                        for k, m in ((5, mean5), (10, mean10))}}


@pytest.fixture()
def folder(tmp_path):
    """Strict, cross-dataset and frozen episodic files for every dataset; full-way on the
    official BANKING77 files, and on the DNNC/CPFT splits for BANKING77 (above CPFT at 5 shots)
    and HWU64 (below)."""
    files = {}
    means = {"banking77": (86.0, 95.0, 90.0, 96.0), "hwu64": (81.0, 93.0, 83.0, 94.0),
             "clinc150": (94.0, 98.0, 96.0, 99.5)}
    classes = {"banking77": 25, "hwu64": [16, 20, 24, 28, 32], "clinc150": 50}
    best = {"banking77": [200, 150, 200, 150, 150], "hwu64": [0, 50, 100, 150, 200],
            "clinc150": [150, 100, 100, 50, 200]}
    for d, (f1, f5, m1, m5) in means.items():
        files[f"episodic_{d}_frozen.json"] = episodic(f1, f5)
        files[f"episodic_{d}_protonet-indomain.json"] = episodic(m1, m5, best_steps=best[d],
                                                                  train_classes=classes[d])
        files[f"episodic_{d}_protonet.json"] = episodic(m1 + 1, m5, uncentered=True, best_steps=best[d],
                                                         train_classes=classes[d])
    files["episodic_banking77_maml.json"] = episodic(84.0, 92.0)
    files["episodic_banking77_reptile.json"] = episodic(87.5, 93.0)
    files["fullway_banking77_frozen.json"] = fullway(77.0, 80.0)
    files["fullway_banking77_protonet.json"] = fullway(81.0, 85.0)
    few = {"fewshot_intent/fullway_banking77_frozen.json": fullway(77.0, 80.0, "fewshot"),
           "fewshot_intent/fullway_banking77_logreg.json": fullway(86.0, 88.0, "fewshot"),
           "fewshot_intent/fullway_hwu64_frozen.json": fullway(75.0, 80.0, "fewshot"),
           "fewshot_intent/fullway_hwu64_logreg.json": fullway(76.0, 81.0, "fewshot")}
    files.update(few)
    (tmp_path / "fewshot_intent").mkdir()
    for name, record in files.items():
        (tmp_path / name).write_text(json.dumps(record))
    return tmp_path


# ---------------------------------------------------------------- finding the folder
def test_results_dir_finds_the_committed_folder_from_a_chapter():
    assert results.results_dir(REPO / "book" / "ch05_practice") == COMMITTED


def test_results_dir_outside_a_clone_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(metabook, "__file__", str(tmp_path / "site" / "metabook" / "__init__.py"))
    with pytest.raises(FileNotFoundError, match="clone"):
        results.results_dir(tmp_path)


def test_results_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        results.Results(tmp_path / "nope")


def test_get_load_and_used(folder):
    res = results.Results(folder)
    assert res.get("episodic_banking77_anil.json") is None
    assert res.episodic("banking77", "frozen")["summary"]["1shot"]["mean"] == 86.0
    assert list(res.used) == ["episodic_banking77_frozen.json"]
    with pytest.raises(FileNotFoundError, match="episodic_hwu64_anil.json"):
        res.episodic("hwu64", "anil", required=True)
    assert "episodic_banking77_frozen.json" in res.names()
    listed = results.provenance(res)
    assert listed.startswith("- `episodic_banking77_frozen.json`") and "1.0 min" in listed


# ---------------------------------------------------------------- formatting
def test_pm_and_markdown_table():
    assert results.pm(89.511, 0.333) == "89.51\u00a0±\u00a00.33"
    assert results.pm(0.4, 0.2, 1, signed=True) == "+0.4\u00a0±\u00a00.2"
    table = results.markdown_table(("a", "b"), [(1, 2), (3, 4)])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]


def test_shot_reads_a_summary(folder):
    r = results.Results(folder).episodic("banking77", "protonet")
    assert results.shot(r, 1) == pytest.approx((91.0, T_HALF))  # t over the 5 split means
    assert results.shot(r, 5, "_uncentered") == (95.5, 0.2)  # no split means: the pooled interval
    assert results.shot(None, 1) is None


# ---------------------------------------------------------------- episodic
def test_episodic_table_strict_rows_and_paired_deltas(folder):
    table = results.episodic_table(results.Results(folder))
    rows = [ln for ln in table.splitlines()[2:]]
    assert sum("Δ strict meta-trained − frozen (paired)" in r for r in rows) == 3
    assert sum("cross-dataset:" in r for r in rows) == 3  # only the "then train intents" files exist
    assert not any("target" in r for r in rows)
    # BANKING77: strict 90.0 vs frozen 86.0 on identical split offsets -> +4.00 ± 0.00
    delta = next(r for r in rows if "Δ strict" in r)
    assert "+4.00\u00a0±\u00a00.00" in delta and "+1.00\u00a0±\u00a00.00" in delta
    assert all(r.count("|") == 6 for r in rows)


def test_headlines_and_anchors_sentence(folder):
    res = results.Results(folder)
    assert "BANKING77 90.0 ± 2.0% (+4.0 ± 0.0 over frozen)" in results.episodic_headline(res)
    text = results.anchors_sentence(res)
    # BANKING77 logreg 86.0 ± 2.0 clears CPFT 80.86 at 5 shots; 88.0 ± 2.0 vs 87.20 does not
    assert text.startswith("on the splits CPFT reports on, the best MiniLM method clears CPFT's "
                           "published full-way accuracy in 1 of 4 settings")
    assert "no episodic anchor could be verified" in text
    goals = results.fewshot_goals(res)
    assert goals["banking77"][5] == ("logreg", pytest.approx(86.0 - 80.86), pytest.approx(T_HALF))
    table = results.fewshot_table(res)
    assert "met: +5.14" in table and "missed: +0.80" in table and "missed: -6.03" in table
    assert "| BANKING77 | 5 | 77.50 | 86.50 | 80.86 |" in table  # the published draw, frozen and logistic


def test_heads_sentence_counts_heads_below_frozen(folder):
    text = results.heads_sentence(results.Results(folder))
    assert text.startswith("On BANKING77, 1 of the 2 head learners score below")
    assert "the best, reptile, reaches 87.5%" in text
    assert "| BANKING77 | maml |" in results.heads_table(results.Results(folder))


def test_best_step_correlation_sign_and_scope(folder):
    histories = results.valid_histories(results.Results(folder))
    assert len(histories) == 15 and histories[0]["steps"] == [0, 50, 100, 150, 200]
    corr = results.best_step_correlation(histories)
    assert set(corr) == {"all", "hwu64"}  # only HWU64's splits differ in size
    assert corr["hwu64"]["r"] == pytest.approx(1.0) and corr["hwu64"]["n"] == 5
    text = results.best_step_sentence(histories)
    assert "first half of training in 6 of 15 runs" in text
    assert "within HWU64" in text and "r = +1.00" in text and "later best step" in text


def test_plot_valid_curves_has_a_panel_per_dataset(folder):
    import matplotlib
    matplotlib.use("Agg")
    fig = results.plot_valid_curves(results.valid_histories(results.Results(folder)))
    assert [ax.get_title() for ax in fig.axes] == ["BANKING77", "HWU64", "CLINC150"]
    assert len(fig.axes[1].lines) == 5


# ---------------------------------------------------------------- full-way, published
def test_fullway_gaps_and_table(folder):
    res = results.Results(folder)
    gaps = results.fullway_gaps(res)
    assert set(gaps) == {"banking77"}
    assert gaps["banking77"] == pytest.approx((81.0 - 80.86, 85.0 - 87.20))
    table = results.fullway_table(res)
    assert "|  | meta-trained − CPFT | +0.14 | -2.20 |" in table
    assert "CLINC150" not in table  # no full-way CLINC150 file in this folder
    assert "DNNC (2020, published) | 80.40 | 86.71" in table
    assert "4 epochs" in results.shot_settings(res.fullway("banking77", "protonet"))


def test_published_anchors_are_complete_and_cited():
    bib = (REPO / "references.bib").read_text(encoding="utf-8")
    assert {"DNNC", "CPFT"} <= set(results.PUBLISHED)
    for method, p in results.PUBLISHED.items():
        assert re.search(rf"@\w+\{{{p['cite']},", bib), f"{method}: {p['cite']} not in references.bib"
        assert p["source"] and p["encoder"] and 2015 < p["year"] < 2030
        assert "jianguoz/Few-Shot-Intent-Detection" in p["source"] and "fa9553312b" in p["source"]
        assert set(p["accuracy"]) == {"banking77", "clinc150", "hwu64"}
        for five, ten in p["accuracy"].values():
            assert 20 < five < ten <= 100
    table = results.published_table()
    dnnc = next(ln for ln in table.splitlines() if ln.startswith("| DNNC"))
    assert dnnc.startswith("| DNNC (2020) | 80.40 / 86.71 | 80.46 / 84.72 | 91.02 / 93.76")
    assert results.UNVERIFIED and all(results.UNVERIFIED.values())


def test_the_readme_cpft_anchors_are_the_published_ones():
    for d, pair in CPFT.items():
        assert results.PUBLISHED["CPFT"]["accuracy"][d] == pair


# ---------------------------------------------------------------- sentences
@pytest.mark.parametrize("diffs, start", [
    ({1: (0.1, 0.3), 5: (-0.1, 0.2)}, "Both intervals contain zero"),
    ({1: (0.5, 0.3), 5: (0.4, 0.2)}, "Both intervals exclude zero: on these episodes the "
                                     "meta-trained encoder scores higher"),
    ({1: (-0.5, 0.3), 5: (-0.4, 0.2)}, "Both intervals exclude zero: on these episodes the "
                                       "meta-trained encoder scores lower"),
    ({1: (0.5, 0.3), 5: (0.1, 0.2)}, "The shots disagree: at 1-shot the interval excludes zero"),
    ({1: (0.5, 0.3), 5: (0.1, 0.2), 10: (0.1, 0.2)}, "The shots disagree"),
    ({1: (0.0, 0.3), 5: (0.1, 0.2), 10: (0.1, 0.2)}, "Every interval contains zero"),
])
def test_paired_verdict(diffs, start):
    assert results.paired_verdict(diffs).startswith(start)


def test_speed_headline_and_encoder_table_on_the_committed_files():
    res = results.Results(COMMITTED)
    text = results.speed_headline(res)
    assert re.match(r"\d+ ms per second-order meta-step against \d+ ms for higher", text)
    assert "maml_speed.json" in res.used
    assert results.encoder_table(res).splitlines()[0].startswith("| encoder | batch size")
    tables = results.speed_tables(res)
    assert tables.count("| method | ms / meta-step") >= 2


def test_committed_tables_cover_every_dataset():
    res = results.Results(COMMITTED)
    assert results.episodic_table(res).count("Δ strict") == len(results.NAMES)
    summary = results.summary_table(res)
    for name in results.NAMES.values():
        assert summary.count(f"| {name} | 5-way") == 2
        assert summary.count(f"| {name} | full-way") == 2
    rows = results.reruns(res)
    assert results.rerun_sentence(rows).startswith(f"{sum(r['within_ci'] for r in rows)} of the")
    assert results.rerun_sentence([]) == "no rerun is committed yet"


def _setfit(pub5, pub10, chosen=5):
    """A SetFit record as ``fullway --algo setfit --draws 0`` writes it: the published draw only."""
    return {"benchmark": "fullway", "algo": "setfit", "splits": "fewshot", "classes": 77,
            "results": {f"{k}shot": {"published_draw": p, "iterations": chosen,
                                     "valid_sweep": {"1": 70.0, "5": 72.0}, "seconds_per_step": 1.0,
                                     "default_pairs": 146300, "default_seconds_estimate": 9144.0}
                        for k, p in ((5, pub5), (10, pub10))}}


def test_peer_and_levers_are_shown_with_their_base(folder):
    (folder / "fewshot_intent" / "fullway_banking77_setfit.json").write_text(json.dumps(_setfit(79.5, 84.25)))
    (folder / "fewshot_intent" / "fullway_banking77_logreg-mpnet.json").write_text(
        json.dumps(fullway(88.0, 91.0, "fewshot")))
    (folder / "episodic_banking77_frozen-mpnet.json").write_text(json.dumps(episodic(88.0, 96.0)))
    res = results.Results(folder)
    table = results.fewshot_table(res)
    assert "SetFit (peer, same MiniLM)" in table
    assert "| BANKING77 | 5 | 77.50 | 86.50 | 79.50 | 80.86 |" in table  # frozen, logistic, SetFit, CPFT
    assert "| HWU64 | 5 | 75.50 | 76.50 | — | 82.03 |" in table  # no SetFit file for HWU64
    assert "5 iteration(s) (valid 72.00)" in table and "146,300 pairs would take about 2.5 h" in table
    levers = results.levers_table(res)
    # 88 - 86 on every draw: the paired difference is exact; the mean clears CPFT by 7.14 ± its t-interval
    assert ("| BANKING77 | logistic, mpnet-base | 88.00 ± 1.96 | 91.00 ± 1.96 | +2.00 ± 0.00 / +3.00 ± 0.00 | "
            f"+7.14 ± {T_HALF:.2f} met / +3.80 ± {T_HALF:.2f} met |") in levers
    assert "*logistic, mpnet-base*: logistic regression on all-mpnet-base-v2 (110M)" in levers
    assert results.larger_encoder_sentence(res) == (
        "the larger encoder lifts logistic regression by +2.00 to +3.00 points over MiniLM's (paired over the "
        f"draws) and clears CPFT in every cell (BANKING77 5-shot +7.14 ± {T_HALF:.2f}; BANKING77 10-shot "
        f"+3.80 ± {T_HALF:.2f})")
    assert "lever: frozen all-mpnet-base-v2" in results.episodic_table(res)
    assert "(Δ +2.00\xa0±\xa00.00)" in results.episodic_table(res)  # 88 − 86 on every split
    assert "**uses label names**" in results.levers_table(results.Results(COMMITTED))


def test_levers_table_is_empty_without_lever_files(folder):
    assert results.levers_table(results.Results(folder)) == ""


def test_recipe_sentence_pairs_over_draws(folder):
    few = folder / "fewshot_intent"
    (few / "fullway_hwu64_protonet.json").write_text(json.dumps(fullway(80.0, 86.0, "fewshot")))
    (few / "fullway_hwu64_cpft.json").write_text(json.dumps(fullway(78.0, 86.0, "fewshot")))
    assert results.recipe_sentence(results.Results(folder)) == (
        "CPFT's recipe on MiniLM against meta-trained on the shots, paired over the draws: HWU64 5-shot below it "
        "(-2.00\xa0±\xa00.00); HWU64 10-shot level with it (+0.00\xa0±\xa00.00)")
    assert results.recipe_sentence(results.Results(folder), versus="frozen") == (
        "CPFT's recipe on MiniLM against frozen prototypes, paired over the draws: HWU64 5-shot above it "
        "(+3.00\xa0±\xa00.00); HWU64 10-shot above it (+6.00\xa0±\xa00.00)")
