"""The headline results tables, rendered from the JSON files in ``benchmarks/results/``.

``python -m metabook.bench report`` prints the markdown; ``--readme README.md``
rewrites the block between ``<!-- results:start -->`` and ``<!-- results:end -->``
in place, so README's numbers are always those of the committed files.  A test
checks that README's block equals this output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = {"banking77": "BANKING77", "hwu64": "HWU64", "clinc150": "CLINC150"}
#: Where the full-way anchors were read: the leaderboard of the repository that publishes the
#: DNNC/CPFT splits, kept by the first author of both papers (section "Few-shot intent detection
#: baselines/leaderboard"; the CPFT and DNNC rows were added in its commit 92a5f29).
JZ_SOURCE = ("github.com/jianguoz/Few-Shot-Intent-Detection, README.md at commit "
             "fa9553312b1dba54b1be0aae2d30b13171f898e5, leaderboard tables (5-shot, 10-shot)")
#: Published full-way accuracy (%) at K = 5 and 10 on the DNNC/CPFT splits (``fewshot_intent/``),
#: each read from :data:`JZ_SOURCE`.  ``encoder`` says what the source states about the model.
PUBLISHED = {
    "USE+ConveRT": {"cite": "casanueva2020banking77", "year": 2020,
                    "encoder": "USE + ConveRT sentence encoders, an MLP on top (size not stated)",
                    "note": "its 5-shot row was not reported by the original paper",
                    "accuracy": {"banking77": (77.75, 85.19), "clinc150": (90.49, 93.26),
                                 "hwu64": (80.01, 85.83)}},
    "DNNC": {"cite": "zhang2020dnnc", "year": 2020,
             "encoder": "RoBERTa-base (125M) pair model, NLI-pretrained",
             "note": "BANKING77 and HWU64 numbers provided by the DNNC authors (the repository's issue #3)",
             "accuracy": {"banking77": (80.40, 86.71), "clinc150": (91.02, 93.76), "hwu64": (80.46, 84.72)}},
    "CPFT": {"cite": "zhang2021cpft", "year": 2021,
             "encoder": "not stated in the source (built on DNNC's RoBERTa-base code)",
             "note": "reported by the paper's authors",
             "accuracy": {"banking77": (80.86, 87.20), "clinc150": (92.34, 94.18), "hwu64": (82.03, 87.13)}},
    "ICDA": {"cite": "lin2023icda", "year": 2023,
             "encoder": "not stated in the source",
             "note": "rows added by the repository's commit ada109b",
             "accuracy": {"banking77": (84.01, 89.79), "clinc150": (92.62, 94.84), "hwu64": (82.45, 87.41)}},
}
for _p in PUBLISHED.values():
    _p["source"] = f"{JZ_SOURCE}; {_p['note']}"
#: The goal of the full-way protocol: CPFT's numbers.
CPFT = {d: a for d, a in PUBLISHED["CPFT"]["accuracy"].items()}
#: Episodic anchors that could not be verified from a source, and why; none is shown as a target.
UNVERIFIED = {
    "ProtAugment (Dopierre et al., ACL 2021), episodic 5-way 1/5-shot":
        "its repository (tdopierre/ProtAugment) publishes no results table (a commit reads "
        "'Ignores results table'), and no stored copy of the paper's tables could be read",
    "a later paper on the ProtAugment splits":
        "Ma et al. 2022 (microsoft/KC), PIE (amazon-science/intent-aware-encoder) and Müller et al. "
        "2022 publish no numbers in their repositories",
}
HEADS = ("maml", "fomaml", "anil", "metasgd", "reptile")
EPISODIC_VARIANTS = {"protonet-indomain": "ProtoNet on the split's train intents only",
                     "protonet-xdata-strict": "ProtoNet on the other two datasets with every intent that overlaps "
                                              "the target removed (`overlap/`), no target intents",
                     "protonet-xdata": "ProtoNet on the other two datasets only (`pretrain`), overlap kept, no target intents"}
FULLWAY_VARIANTS = {"protonet-xdata": "meta-trained on the other datasets only, no shot training",
                    "protonet-smlmt": "SMLMT on the unlabeled train sentences, then shot fine-tuning"}


def _load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.is_file() else None


def split_interval(s: dict) -> tuple[float, float]:
    """``(mean, t half-width)`` of an episodic summary over its split means (the unit that varies
    when the protocol is rerun); the pooled-episode ``ci95`` where a file has one split."""
    from metabook.bench.stats import t_interval

    means = s.get("split_means") or []
    return (s["mean"], t_interval(means)[1]) if len(means) > 1 else (s["mean"], s["ci95"])


def draw_interval(s: dict) -> tuple[float, float]:
    """``(mean, t half-width)`` of a full-way result over its own draws."""
    from metabook.bench.stats import t_interval

    return s["mean"], (t_interval(s["draws"])[1] if len(s["draws"]) > 1 else 0.0)


def paired_splits(a: dict | None, b: dict | None) -> tuple[float, float] | None:
    """``a - b`` on the same test episodes: the mean of the split-mean differences and its
    t-interval (each split's mean difference is the mean of its paired episode differences)."""
    from metabook.bench.stats import t_interval

    if a is None or b is None or len(a.get("split_means", [])) != len(b.get("split_means", [])):
        return None
    diffs = [x - y for x, y in zip(a["split_means"], b["split_means"])]
    return t_interval(diffs) if len(diffs) > 1 else None


def paired_draws(a: dict | None, b: dict | None, k: int) -> tuple[float, float] | None:
    """``a - b`` at ``k`` shots over the same draws: mean difference and its t-interval."""
    from metabook.bench.stats import t_interval

    sa, sb = (None if r is None else r["results"].get(f"{k}shot") for r in (a, b))
    if sa is None or sb is None or len(sa["draws"]) != len(sb["draws"]) or len(sa["draws"]) < 2:
        return None
    return t_interval(np.subtract(sa["draws"], sb["draws"]))


def _pm(s: dict | None) -> str:
    if s is None:
        return "—"
    m, h = split_interval(s)
    return f"{m:.2f} ± {h:.2f}"


def _delta(d: tuple[float, float] | None) -> str:
    return "—" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"


def _shot(r: dict | None, k: int, key: str = "") -> dict | None:
    return None if r is None else r["summary"].get(f"{k}shot{key}")


#: The speed results, in order, with their titles.
SPEED = (("maml_speed.json", "sinusoid (meta-batch 25, K = 10, 1-40-40-1 MLP)"),
         ("maml_speed_text.json", "text head on MiniLM embeddings (5-way 5-shot, meta-batch 16)"),
         ("maml_speed_minilm-top2.json", "second order through MiniLM, top 2 of 6 layers + head adapted "
                                         "(5-way 5-shot, meta-batch 4, 16 tokens)"),
         ("maml_speed_minilm-all.json", "second order through MiniLM, the whole model adapted "
                                        "(5-way 5-shot, meta-batch 4, 16 tokens)"))

GRAD_DIFF = " max \\|grad − higher's\\| |"


def speed_section(results: Path) -> list[str]:
    out = []
    for name, title in SPEED:
        r = _load(results, name)
        if r is None:
            continue
        diff = "max_abs_grad_diff_vs_higher" if "max_abs_grad_diff_vs_higher" in r["rows"][0] else None
        out += [f"MAML meta-step, {title}, {r['workload']['inner_steps']} inner steps, medians of {r['repeats']} "
                f"interleaved steps (`{r['command']}`):", "",
                "| method | ms / meta-step | vs higher | peak MiB |" + (GRAD_DIFF if diff else ""),
                "|---|---:|---:|---:|" + ("---:|" if diff else "")]
        ratio = ".2f" if diff else ".1f"  # the MiniLM ratios are near the 1.5x goal
        for row in r["rows"]:
            vs = row.get("speedup_vs_higher")
            out.append(f"| {row['method']} | {row['median_ms']:.1f} | "
                       f"{'—' if vs is None else f'{vs:{ratio}}x'} | {row['peak_mib']:.1f} |"
                       + (f" {row[diff]:.1e} |" if diff else ""))
        out.append("")
    return out


def _settings_line(r: dict) -> str:
    st = r["settings"]
    init = (r.get("init") or {}).get("meta_pretrain") or {}
    start = f"from MiniLM meta-trained on {' + '.join(init['datasets'])}, " if init.get("datasets") else ""
    cl2n = ", CL2N" if st.get("center") == "train" else ""
    return (f"{start}{st['train_steps']} steps, {st['train_way']}-way {st['train_shot']}-shot "
            f"{st['train_query']}-query, lr {st['lr']:g}, {st['freeze_layers']} layers frozen{cl2n}")


def episodic_section(results: Path) -> list[str]:
    out = ["Episodic 5-way intent detection on the 5 ProtAugment class splits, **strict protocol**: "
           "meta-training sees only the split's train intents and selects on its valid intents; "
           "the test intents are scored on 600 episodes per split (`python -m metabook.bench episodic`). "
           "Mean ± 95% t-interval over the 5 split means; Δ is meta-trained minus frozen on the same "
           "episodes, a t-interval over the 5 paired split differences. *CL2N* centres the embeddings "
           "on the train intents' mean:", "",
           "| dataset | K | frozen | frozen + CL2N | meta-trained (train intents only) | Δ vs frozen |",
           "|---|---|---:|---:|---:|---:|"]
    evals = []
    for d, name in NAMES.items():
        fr, fc, mt = (_load(results, f"episodic_{d}_{a}.json")
                      for a in ("frozen", "frozen-cl2n", "protonet-indomain"))
        for i, k in enumerate((1, 5)):
            out.append(f"| {name if i == 0 else ''} | {k} | {_pm(_shot(fr, k))} | {_pm(_shot(fc, k))} | "
                       f"{_pm(_shot(mt, k))} | {_delta(paired_splits(_shot(mt, k), _shot(fr, k)))} |")
            evals += [s["max_eval_seconds"] for s in (_shot(fr, k), _shot(fc, k))
                      if s and "max_eval_seconds" in s]
        if mt is not None:
            out.append(f"| | | | | {_settings_line(mt)} | |")
    out += ["", "No episodic anchor is shown as a target, because none could be verified from a source: "
            + "; ".join(f"{k}: {v}" for k, v in UNVERIFIED.items()) + ".", ""]
    cross = [(d, v, r) for d in NAMES for v in ("protonet-xdata-strict", "protonet-xdata", "protonet")
             if (r := _load(results, f"episodic_{d}_{v}.json")) is not None]
    if cross:
        out += ["**Cross-dataset setting** (a separate, labelled setting, not the headline): MiniLM first "
                "meta-trained on the *labelled* intents of the other two datasets. Those intents overlap "
                "the target's test intents (CLINC150's banking and credit-card domains for BANKING77; most "
                "HWU64 test intents have a CLINC150 counterpart). The first row of a dataset, where present, "
                "removes them first: `python -m metabook.bench overlap` lists the other datasets' intents "
                "whose domain a rule names (CLINC150's banking and credit-card domains for BANKING77) or "
                "whose centroid of frozen MiniLM embeddings has a cosine of at least 0.7 with some target "
                "intent (`benchmarks/results/overlap/`). In the other rows the overlap was **not** removed, "
                "so they are not comparable with the strict rows:", "",
                "| dataset | variant | 1-shot | 5-shot | Δ vs frozen, 1-shot | Δ vs frozen, 5-shot |",
                "|---|---|---:|---:|---:|---:|"]
        for d, v, r in cross:
            fr = _load(results, f"episodic_{d}_frozen.json")
            label = (EPISODIC_VARIANTS[v] if v in EPISODIC_VARIANTS
                     else "other two datasets (overlap kept), then the split's train intents")
            cl2n = " (+ CL2N)" if r["settings"].get("center") == "train" else ""
            out.append(f"| {NAMES[d]} | {label}{cl2n} | {_pm(_shot(r, 1))} | {_pm(_shot(r, 5))} | "
                       f"{_delta(paired_splits(_shot(r, 1), _shot(fr, 1)))} | "
                       f"{_delta(paired_splits(_shot(r, 5), _shot(fr, 5)))} |")
        out.append("")
    if evals:
        out += [f"ProtoNet evaluation of 600 test episodes from cached embeddings takes at most "
                f"{max(evals):.2f} s (sampling included).", ""]
    levers = [(d, v, r) for d in NAMES for v in EPISODIC_LEVERS
              if (r := _load(results, f"episodic_{d}_{v}.json")) is not None]
    if levers:
        out += ["Episodic levers under the same strict protocol, on the same episodes (Δ vs frozen MiniLM, paired "
                "over the 5 splits):", "",
                "| dataset | lever | 1-shot | 5-shot | Δ vs frozen MiniLM, 1-shot | Δ, 5-shot |",
                "|---|---|---:|---:|---:|---:|"]
        for d, v, r in levers:
            fr = _load(results, f"episodic_{d}_frozen.json")
            out.append(f"| {NAMES[d]} | {EPISODIC_LEVERS[v]} | {_pm(_shot(r, 1))} | {_pm(_shot(r, 5))} | "
                       f"{_delta(paired_splits(_shot(r, 1), _shot(fr, 1)))} | "
                       f"{_delta(paired_splits(_shot(r, 5), _shot(fr, 5)))} |")
        out.append("")
    heads = [(d, a, _load(results, f"episodic_{d}_{a}.json")) for d in NAMES for a in HEADS]
    heads = [h for h in heads if h[2] is not None]
    if heads:
        out += ["Meta-learned heads on frozen MiniLM embeddings (`--algo maml` etc.: a 384x384 linear map and a "
                "zero-initialised output layer, 5 inner steps, 200 meta-steps of meta-batch 16):", "",
                "| dataset | learner | 1-shot | 5-shot |", "|---|---|---:|---:|"]
        out += [f"| {NAMES[d]} | {a} | {_pm(_shot(r, 1))} | {_pm(_shot(r, 5))} |" for d, a, r in heads]
        out.append("")
    return out


def _fw(r: dict | None, k: int) -> str:
    s = None if r is None else r["results"].get(f"{k}shot")
    if s is None:
        return "—"
    m, h = draw_interval(s)
    return f"{m:.2f} ± {h:.2f}"


def _published_draw(r: dict | None, k: int) -> str:
    s = None if r is None else r["results"].get(f"{k}shot")
    return "—" if s is None or "published_draw" not in s else f"{s['published_draw']:.2f}"


def anchors_table() -> list[str]:
    """:data:`PUBLISHED` with each anchor's encoder and source."""
    data = list(NAMES)
    out = ["| method | " + " | ".join(f"{NAMES[d]} 5 / 10" for d in data) + " | encoder | note |",
           "|---|" + "---:|" * len(data) + "---|---|"]
    for m, p in PUBLISHED.items():
        cells = " | ".join(" / ".join(f"{a:.2f}" for a in p["accuracy"][d]) for d in data)
        out.append(f"| {m} ({p['year']}) | {cells} | {p['encoder']} | {p['note']} |")
    return out + ["", f"Source of every row: {JZ_SOURCE}."]


#: Full-way methods on the DNNC/CPFT splits, in table order.
FEWSHOT_ALGOS = {"frozen": "frozen prototypes", "logreg": "frozen + logistic regression",
                 "protonet": "meta-trained on the shots", "cpft": "CPFT's recipe on MiniLM"}
_SHORT = {"frozen": "prototypes", "logreg": "logistic", "protonet": "meta-trained", "cpft": "CPFT recipe"}
#: Levers on the DNNC/CPFT splits, each its own row (``fullway_<data>_<lever>.json``): a short
#: label, the MiniLM method it is paired with, and what it does.
FEWSHOT_LEVERS = {
    "logreg-ensemble": ("logistic + prototypes", "logreg",
                        "logistic regression ensembled with the prototypes, the weight chosen on valid"),
    "logreg-names": ("logistic + prototypes + **label names**", "logreg",
                     "the same, each intent's name added as one more example of it: it **uses label names**"),
    "frozen-mpnet": ("prototypes, mpnet-base", "frozen",
                     "prototypes on a **larger encoder**, all-mpnet-base-v2 (110M), frozen"),
    "logreg-mpnet": ("logistic, mpnet-base", "logreg",
                     "logistic regression on all-mpnet-base-v2 (110M) embeddings, C chosen on valid"),
}
#: Peers scored on the published draw only (one draw: their training is the costly part).
FEWSHOT_PEERS = {"setfit": "SetFit (peer, same MiniLM)"}
#: Episodic levers, each paired with frozen MiniLM on the same episodes.
EPISODIC_LEVERS = {"frozen-mpnet": "frozen all-mpnet-base-v2 (110M), a larger encoder, no training"}


def fewshot_results(results: Path) -> dict[str, dict[str, dict]]:
    """``{data: {algo: record}}`` of ``results/fewshot_intent/fullway_<data>_<algo>.json``."""
    out = {}
    for d in NAMES:
        found = {a: r for a in FEWSHOT_ALGOS if (r := _load(results / "fewshot_intent", f"fullway_{d}_{a}.json"))}
        if found:
            out[d] = found
    return out


def fewshot_goal(records: dict[str, dict], d: str, k: int) -> tuple[str, float, float]:
    """The best MiniLM method at ``k`` shots, and its mean and t half-width minus CPFT's number."""
    best = max(records, key=lambda a: records[a]["results"][f"{k}shot"]["mean"])
    m, h = draw_interval(records[best]["results"][f"{k}shot"])
    return best, m - CPFT[d][(5, 10).index(k)], h


def lr_sweeps(results: Path) -> dict[str, dict[float, float]]:
    """``{data: {lr: mean valid accuracy over K}}`` from ``fewshot_intent/sweep/`` (shot fine-tuning)."""
    out: dict[str, dict[float, float]] = {}
    for path in sorted((results / "fewshot_intent" / "sweep").glob("fullway_*_protonet_lr*_valid.json")):
        r = json.loads(path.read_text())
        if r.get("eval_split") != "valid":
            raise ValueError(f"{path.name} is not scored on valid")
        name = path.name.split("_")[1]
        out.setdefault(name, {})[r["settings"]["lr"]] = float(np.mean([v["mean"] for v in r["results"].values()]))
    return out


def fewshot_table(results: Path, published: bool = True) -> list[str]:
    """The full-way table on the DNNC/CPFT splits: every committed method, CPFT, and the goal;
    ``published=False`` leaves out the published-draw column (see :func:`published_draw_table`)."""
    found = fewshot_results(results)
    algos = [a for a in FEWSHOT_ALGOS if any(a in f for f in found.values())]
    pub = (" | published draw (" + " / ".join(_SHORT[a] for a in algos) + ")") if published else ""
    out = ["| dataset | K | " + " | ".join(FEWSHOT_ALGOS[a] for a in algos) + pub + " | CPFT | best − CPFT |",
           "|---|---|" + "---:|" * (len(algos) + 1 + published) + "---|"]
    for d, recs in found.items():
        for i, k in enumerate((5, 10)):
            best, gap, h = fewshot_goal(recs, d, k)
            goal = f"{'met' if gap - h > 0 else 'missed'}: {gap:+.2f} ± {h:.2f} ({_SHORT[best]})"
            cells = " | ".join(_fw(recs.get(a), k) for a in algos)
            if published:
                cells += " | " + " / ".join(_published_draw(recs.get(a), k) for a in algos)
            out.append(f"| {NAMES[d] if i == 0 else ''} | {k} | {cells} | {CPFT[d][i]:.2f} | {goal} |")
    return out


def published_draw_table(results: Path) -> list[str]:
    """Each method's accuracy on the published ``train_5``/``train_10`` draw (one draw, no
    interval), the peers (:data:`FEWSHOT_PEERS`) included, then how the peers were set."""
    found = fewshot_results(results)
    peers = {d: {p: r for p in FEWSHOT_PEERS if (r := _load(results / "fewshot_intent", f"fullway_{d}_{p}.json"))}
             for d in found}
    algos = [a for a in FEWSHOT_ALGOS if any(a in f for f in found.values())]
    cols = [p for p in FEWSHOT_PEERS if any(p in v for v in peers.values())]
    out = ["| dataset | K | " + " | ".join([FEWSHOT_ALGOS[a] for a in algos] + [FEWSHOT_PEERS[p] for p in cols])
           + " | CPFT |", "|---|---|" + "---:|" * (len(algos) + len(cols) + 1)]
    for d, recs in found.items():
        for i, k in enumerate((5, 10)):
            out.append(f"| {NAMES[d] if i == 0 else ''} | {k} | "
                       + " | ".join([_published_draw(recs.get(a), k) for a in algos]
                                    + [_published_draw(peers[d].get(p), k) for p in cols])
                       + f" | {CPFT[d][i]:.2f} |")
    notes = [setfit_note(d, r) for d in found if (r := peers[d].get("setfit")) is not None]
    if notes:
        out += ["", "SetFit: contrastive fine-tuning of the same MiniLM on pairs of the shots, then a logistic "
                "head (`--algo setfit`); `num_iterations` (2 × iterations pairs per shot) chosen on `valid` from "
                + ", ".join(sorted({str(v) for d in found if (r := peers[d].get("setfit"))
                                    for k in (5, 10) for v in r["results"][f"{k}shot"]["valid_sweep"]}))
                + ". " + " ".join(notes) + " The seconds a step are wall-clock times of these runs, which shared the "
                "machine with other benchmarks; a quiet machine is faster."]
    return out


def claims_table(results: Path) -> list[str]:
    """Where meta-learning (the meta-trained column) may claim a gain: only where it beats both
    logistic regression (paired over the 5 draws, the interval above zero) and the SetFit peer
    (on the published draw, its only score). Empty without both files for some dataset."""
    rows = []
    for d in NAMES:
        meta, logreg, peer = (_load(results / "fewshot_intent", f"fullway_{d}_{a}.json")
                              for a in ("protonet", "logreg", "setfit"))
        if meta is None or logreg is None:
            continue
        for i, k in enumerate((5, 10)):
            diff = paired_draws(meta, logreg, k)
            s_meta = meta["results"][f"{k}shot"].get("published_draw")
            s_peer = None if peer is None else peer["results"].get(f"{k}shot", {}).get("published_draw")
            vs_peer = None if s_meta is None or s_peer is None else s_meta - s_peer
            claimed = diff is not None and diff[0] - diff[1] > 0 and vs_peer is not None and vs_peer > 0
            rows.append(f"| {NAMES[d] if i == 0 else ''} | {k} | {_delta(diff)} | "
                        f"{'—' if vs_peer is None else f'{vs_peer:+.2f}'} | {'yes' if claimed else 'no'} |")
    if not rows:
        return []
    return ["| dataset | K | meta-trained − logistic (paired, 5 draws) | meta-trained − SetFit (published draw) "
            "| gain claimed |", "|---|---|---:|---:|---|"] + rows


def setfit_note(d: str, r: dict) -> str:
    """What SetFit chose on ``valid`` for dataset ``d``, and what its default sampling would cost."""
    parts = []
    hw = r.get("hardware", {})
    where = (f"{hw['torch_threads']} CPU thread{'s' if hw['torch_threads'] > 1 else ''}"
             if hw.get("device") == "cpu" and hw.get("torch_threads") else hw.get("device", "this machine"))
    for k in (5, 10):
        s = r["results"][f"{k}shot"]
        hours = s["default_seconds_estimate"] / 3600
        parts.append(f"K = {k}: {s['iterations']} iteration(s) (valid {s['valid_sweep'][str(s['iterations'])]:.2f}); "
                     f"the default's {s['default_pairs']:,} pairs would take about {hours:.1f} h at the measured "
                     f"{s['seconds_per_step']:.2f} s a step on {where}")
    return f"{NAMES[d]}: " + "; ".join(parts) + "."


def levers_table(results: Path) -> list[str]:
    """:data:`FEWSHOT_LEVERS` that have a file: each lever's accuracy, its paired difference from
    its MiniLM base, and its margin over CPFT; then what each lever is. Empty when none is committed."""
    levers = [(d, v, r) for d in NAMES for v in FEWSHOT_LEVERS
              if (r := _load(results / "fewshot_intent", f"fullway_{d}_{v}.json")) is not None]
    if not levers:
        return []
    out = ["| dataset | lever | 5-shot | 10-shot | Δ vs MiniLM, 5 / 10 | − CPFT, 5 / 10 |",
           "|---|---|---:|---:|---|---|"]
    for d, v, r in levers:
        label, base_name, _ = FEWSHOT_LEVERS[v]
        base = _load(results / "fewshot_intent", f"fullway_{d}_{base_name}.json")
        deltas = " / ".join(_delta(paired_draws(r, base, k)) for k in (5, 10))
        gaps = []
        for i, k in enumerate((5, 10)):
            m, h = draw_interval(r["results"][f"{k}shot"])
            gaps.append(f"{m - CPFT[d][i]:+.2f} ± {h:.2f} {'met' if m - h > CPFT[d][i] else 'missed'}")
        out.append(f"| {NAMES[d]} | {label} | {_fw(r, 5)} | {_fw(r, 10)} | {deltas} | {' / '.join(gaps)} |")
    used = [v for v in FEWSHOT_LEVERS if any(v == u for _, u, _ in levers)]
    return out + ["", "Levers: " + "; ".join(
        f"*{FEWSHOT_LEVERS[v][0].replace('**', '')}*: {FEWSHOT_LEVERS[v][2]}, paired with MiniLM "
        f"{_SHORT[FEWSHOT_LEVERS[v][1]]}" for v in used) + "."]


def fullway_section(results: Path) -> list[str]:
    out = ["Full-way K-shot (DNNC/CPFT protocol) on **the splits the anchors report on** "
           "(`fewshot_intent/`): K shots for every intent, the whole test split (77-, 150- and 64-way), "
           "mean ± 95% t-interval over 5 draws of our own from `train`; the published `train_K` draw "
           "is scored beside them. MiniLM has 23M parameters; logistic regression chooses its C on "
           "`valid` (`python -m metabook.bench fullway --splits fewshot`). The goal is CPFT, met when "
           "the interval clears it:", ""]
    out += fewshot_table(results, published=False)
    out += ["", "On the published draw (`train_5` / `train_10`, the shots the anchors used; one draw, so no interval), "
            "with the peer:", ""] + published_draw_table(results)
    sweeps = lr_sweeps(results)
    if sweeps:
        out += ["", "The meta-trained column fine-tunes MiniLM on the shots with full-way ProtoNet; its learning rate "
                "was chosen per dataset on `valid` (one draw, K = 5 and 10; `fewshot_intent/sweep/`): "
                + "; ".join(f"{NAMES[d]} " + ", ".join(f"{lr:g}: {a:.2f}" for lr, a in sorted(v.items()))
                            for d, v in sweeps.items()) + "."]
    claims = claims_table(results)
    if claims:
        out += ["", "Meta-learning claims a gain only where it beats both the logistic baseline (interval above "
                "zero) and the SetFit peer:", ""] + claims
    levers = levers_table(results)
    if levers:
        out += ["", "Levers on the same splits and draws, each its own row (Δ is the lever minus the MiniLM method "
                "it builds on, paired over the 5 draws):", ""] + levers
    out += ["", "The published anchors, each read from its source (accuracy %, K = 5 / 10):", ""]
    out += anchors_table()
    out += ["", "Full-way on the datasets' **official files** (earlier runs: BANKING77's official train "
            "has 10,003 examples, the DNNC split's 8,622; the test splits are the same). *Meta-trained* "
            "fine-tunes MiniLM on the K shots with full-way ProtoNet; mean ± 95% t-interval over 5 draws:", "",
            "| dataset | K | frozen | meta-trained | CPFT | meta-trained − CPFT |", "|---|---|---:|---:|---:|---|"]
    for d in ("banking77", "clinc150"):
        fr, mt = _load(results, f"fullway_{d}_frozen.json"), _load(results, f"fullway_{d}_protonet.json")
        for i, k in enumerate((5, 10)):
            s = None if mt is None else mt["results"].get(f"{k}shot")
            gap = "—" if s is None else f"{s['mean'] - CPFT[d][i]:+.2f}"
            out.append(f"| {NAMES[d] if i == 0 else ''} | {k} | {_fw(fr, k)} | {_fw(mt, k)} | {CPFT[d][i]:.2f} | {gap} |")
    ablations = [(d, v, r) for d in ("banking77", "clinc150") for v in FULLWAY_VARIANTS
                 if (r := _load(results, f"fullway_{d}_{v}.json")) is not None]
    if ablations:
        out += ["", "Full-way ablations on the official files (same draws):", "",
                "| dataset | variant | 5-shot | 10-shot |", "|---|---|---:|---:|"]
        out += [f"| {NAMES[d]} | {FULLWAY_VARIANTS[v]} | {_fw(r, 5)} | {_fw(r, 10)} |" for d, v, r in ablations]
    out.append("")
    enc = _load(results, "encoder.json")
    if enc is not None:
        tp = enc["throughput"]
        out += [f"MiniLM encoding (`encoder.json`): {tp['metabook']['sentences_per_s']:.0f} sentences/s against "
                f"sentence-transformers' {tp['sentence-transformers']['sentences_per_s']:.0f} in the same run; "
                f"a warm embedding cache is {enc['cache']['speedup']:,.0f}x faster than encoding.", ""]
    return out


def rerun_section(results: Path) -> list[str]:
    """Committed episodic results against their reruns through the trainer (``results/rerun``)."""
    from metabook.bench.rerun import compare, table

    rows = compare(results)
    if not rows:
        return []
    return ["Reproduced through the trainer (`metabook.train.run`): results that the earlier training loops of "
            "`metabook.bench` wrote (kept in `benchmarks/results/legacy/` where the current code has since "
            "regenerated the file), rerun through the trainer (`benchmarks/results/rerun/`, each file with its "
            "command) on the same test episodes or draws; the paired difference is a t-interval over the split "
            "means or draws:", "",
            table(rows), ""]


def render(results: str | Path = "benchmarks/results") -> str:
    """The results block (markdown) for ``results``."""
    results = Path(results)
    machines = set()
    for path in sorted(results.glob("*.json")):
        r = json.loads(path.read_text())
        hw, ver = r.get("hardware", {}), r.get("versions", {})
        if hw:
            machines.add(f"{hw.get('gpu') or hw.get('device')}, {hw.get('cpu_count')} CPU cores, "
                         f"torch {ver.get('torch', '?')}")
    where = "; ".join(sorted(machines)) or "no result files yet"
    lines = [f"Measured on: {where}. Each JSON file under `benchmarks/results/` records its command, "
             "seed, settings, versions and hardware. Regenerate this block with "
             "`python -m metabook.bench report --readme README.md`.", ""]
    lines += (speed_section(results) + episodic_section(results) + rerun_section(results)
              + fullway_section(results))
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} ... {END} block")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--readme", default=None, help="rewrite this file's results block in place")


def run(args: argparse.Namespace) -> int:
    block = render(args.results)
    if args.readme:
        path = Path(args.readme)
        path.write_text(replace_block(path.read_text(), block))
        print(f"updated {path}")
    else:
        print(block, end="")
    return 0
