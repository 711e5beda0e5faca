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

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = {"banking77": "BANKING77", "hwu64": "HWU64", "clinc150": "CLINC150"}
#: Issue targets, 5-way episodic (1-shot, 5-shot): the frozen floor + 3 points at 1-shot.
TARGETS = {"banking77": (89.8, 97.0), "hwu64": (84.6, 95.0), "clinc150": (97.0, 99.2)}
#: CPFT (Zhang et al., EMNLP 2021), full-way accuracy at K = 5 and 10.
CPFT = {"banking77": (80.86, 87.20), "clinc150": (92.34, 94.18)}
HEADS = ("maml", "fomaml", "anil", "metasgd", "reptile")
EPISODIC_VARIANTS = {"protonet-indomain": "ProtoNet on the split's train intents only",
                     "protonet-xdata": "ProtoNet on the other two datasets only (`pretrain`), no target intents"}
FULLWAY_VARIANTS = {"protonet-xdata": "meta-trained on the other datasets only, no shot training",
                    "protonet-smlmt": "SMLMT on the unlabeled train sentences, then shot fine-tuning"}


def _load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.is_file() else None


def _pm(s: dict | None) -> str:
    return "—" if s is None else f"{s['mean']:.2f} ± {s['ci95']:.2f}"


def _shot(r: dict | None, k: int, key: str = "") -> dict | None:
    return None if r is None else r["summary"].get(f"{k}shot{key}")


def _gap(s: dict | None, target: float) -> str:
    if s is None:
        return "—"
    g = s["mean"] - target
    return f"{'met' if g >= 0 else 'not met'} ({g:+.2f})"


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


def episodic_section(results: Path) -> list[str]:
    out = ["Episodic 5-way intent detection, mean ± 95% CI over every test episode of the 5 "
           "ProtAugment splits (`python -m metabook.bench episodic`). *Meta-trained* fine-tunes "
           "MiniLM itself with ProtoNet on each split's train intents, where noted starting from MiniLM "
           "meta-trained on the other two datasets, and keeps the checkpoint that does best on the valid "
           "intents; *CL2N* centres the embeddings on the train intents' mean:", "",
           "| dataset | K | frozen | frozen + CL2N | meta-trained | meta-trained + CL2N | target | met? |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    evals = []
    for d, name in NAMES.items():
        fr, fc, mt = (_load(results, f"episodic_{d}_{a}.json") for a in ("frozen", "frozen-cl2n", "protonet"))
        centred = mt is not None and "1shot_uncentered" in mt["summary"]
        for i, k in enumerate((1, 5)):
            plain = _shot(mt, k, "_uncentered") if centred else _shot(mt, k)
            best = _shot(mt, k)
            out.append(f"| {name if i == 0 else ''} | {k} | {_pm(_shot(fr, k))} | {_pm(_shot(fc, k))} | "
                       f"{_pm(plain)} | {_pm(best) if centred else '—'} | {TARGETS[d][i]} | "
                       f"{_gap(best, TARGETS[d][i])} |")
            evals += [s["max_eval_seconds"] for s in (_shot(fr, k), _shot(fc, k))
                      if s and "max_eval_seconds" in s]
        if mt is not None:
            st = mt["settings"]
            init = (mt.get("init") or {}).get("meta_pretrain") or {}
            start = f"from MiniLM meta-trained on {' + '.join(init['datasets'])}, " if init.get("datasets") else ""
            out.append(f"| | | | | {start}{st['train_steps']} steps, {st['train_way']}-way {st['train_shot']}-shot "
                       f"{st['train_query']}-query, lr {st['lr']:g}, {st['freeze_layers']} layers frozen "
                       f"| | | |")
    out.append("")
    ablations = [(d, v, r) for d in NAMES for v in EPISODIC_VARIANTS
                 if (r := _load(results, f"episodic_{d}_{v}.json")) is not None]
    if ablations:
        out += ["Episodic ablations (same test episodes; CL2N where the run used it):", "",
                "| dataset | variant | 1-shot | 5-shot |", "|---|---|---:|---:|"]
        out += [f"| {NAMES[d]} | {EPISODIC_VARIANTS[v]} | {_pm(_shot(r, 1))} | {_pm(_shot(r, 5))} |"
                for d, v, r in ablations]
        out.append("")
    if evals:
        out += [f"ProtoNet evaluation of 600 test episodes from cached embeddings takes at most "
                f"{max(evals):.2f} s (sampling included).", ""]
    heads = [(d, a, _load(results, f"episodic_{d}_{a}.json")) for d in NAMES for a in HEADS]
    heads = [h for h in heads if h[2] is not None]
    if heads:
        out += ["Meta-learned heads on frozen MiniLM embeddings (`--algo maml` etc.: a 384x384 linear map and a "
                "zero-initialised output layer, 5 inner steps, 200 meta-steps of meta-batch 16):", "",
                "| dataset | learner | 1-shot | 5-shot |", "|---|---|---:|---:|"]
        out += [f"| {NAMES[d]} | {a} | {_pm(_shot(r, 1))} | {_pm(_shot(r, 5))} |" for d, a, r in heads]
        out.append("")
    return out


def fullway_section(results: Path) -> list[str]:
    out = ["Full-way (DNNC/CPFT protocol: K shots per intent from the official train split, the "
           "whole official test split, 5 draws, mean ± std; `python -m metabook.bench fullway`). "
           "*Meta-trained* fine-tunes MiniLM on the K shots with full-way ProtoNet:", "",
           "| dataset | K | frozen | meta-trained | CPFT | beats CPFT? |", "|---|---|---:|---:|---:|---|"]
    for d in CPFT:
        fr, mt = _load(results, f"fullway_{d}_frozen.json"), _load(results, f"fullway_{d}_protonet.json")
        for i, k in enumerate((5, 10)):
            def cell(r):
                s = None if r is None else r["results"].get(f"{k}shot")
                return (None, "—") if s is None else (s["mean"], f"{s['mean']:.2f} ± {s['std']:.2f}")
            m, text = cell(mt)
            verdict = "—" if m is None else f"{'yes' if m > CPFT[d][i] else 'no'} ({m - CPFT[d][i]:+.2f})"
            out.append(f"| {NAMES[d] if i == 0 else ''} | {k} | {cell(fr)[1]} | {text} | {CPFT[d][i]} | {verdict} |")
    ablations = [(d, v, r) for d in CPFT for v in FULLWAY_VARIANTS
                 if (r := _load(results, f"fullway_{d}_{v}.json")) is not None]
    if ablations:
        out += ["", "Full-way ablations (same draws):", "", "| dataset | variant | 5-shot | 10-shot |",
                "|---|---|---:|---:|"]
        for d, v, r in ablations:
            cells = [f"{s['mean']:.2f} ± {s['std']:.2f}" if (s := r["results"].get(f"{k}shot")) else "—"
                     for k in (5, 10)]
            out.append(f"| {NAMES[d]} | {FULLWAY_VARIANTS[v]} | {cells[0]} | {cells[1]} |")
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
    return ["Reproduced through the trainer (`metabook.train.run`): the committed episodic results above, "
            "rerun by the current code (`benchmarks/results/rerun/`, each file with its command), on the "
            "same test episodes; the paired difference is a t-interval over the split means:", "",
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
