"""Meta-learning as pre-training: does it beat ordinary pre-training on the same text for the same compute?

For a *target* dataset, one corpus (:func:`build_corpus`): CLINC150's Wikipedia sentences and the
unlabeled utterances (``protaugment/*/raw.txt``) of all three datasets, less every sentence of the
target's test data.  Each variant is a run of the one trainer (:func:`metabook.train.run`) from the
same encoder, with the same seeds, steps and sentences per step:

* ``none`` -- no further training (the starting encoder);
* ``mlm``, ``simcse`` -- continued masked-LM / SimCSE on the SMLMT episodes' sentences (``--task text``);
* ``supervised`` -- multi-task training on the other datasets' labelled intents, their overlap
  with the target removed (``--task supervised --exclude T --overlap ... --algorithm maml --inner-steps 0``);
* ``smlmt-protonet``, ``smlmt-maml``, ``smlmt-leopard``, ``smlmt-icl`` -- SMLMT episodes with each
  meta-learner;
* ``hybrid`` -- Hybrid-SMLMT: each task is an episode of the other datasets' intents (overlap
  removed) or an SMLMT episode, with probability 1/2.

Each encoder is scored frozen by the benchmarks themselves, in-process: ``episodic`` (5-way 1/5-shot
prototypes on the target's ProtAugment test classes; the trainer's record and ``check_unseen`` confirm
that the encoder never saw the target's labels) and ``fullway`` (K = 5/10 on the DNNC/CPFT splits,
prototypes and logistic regression with C chosen on valid).  Reported: t-intervals over seeds x splits
and seeds x draws, and paired differences against ``none``, ``mlm`` and ``simcse`` on the same episodes
and draws.  Data: ``$METABOOK_DATA`` (else the pinned URLs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from metabook.bench.common import default_runs_dir, hardware, provenance, versions
from metabook.bench.stats import paired_difference, t_interval, unpack_accuracies
from metabook.data.intents import DATASETS, load_dataset, load_fewshot, load_unlabeled
from metabook.device import by_device, default_device, seed_everything
from metabook.train import TrainConfig, build, build_source, check_unseen, read_record, run as train_run
from metabook.train.sources import MixtureSource, SMLMTSource, TaskSource, read_corpus

TARGETS = tuple(sorted(DATASETS))
VARIANTS = ("none", "mlm", "simcse", "supervised", "smlmt-protonet", "smlmt-maml", "smlmt-leopard",
            "smlmt-icl", "hybrid")
BASELINES = ("none", "mlm", "simcse")
COUNTING = ("tokens: non-padding tokens ([CLS]/[SEP] included, truncated at max_length) of the sentences the "
            "encoder reads, counted with the trainer's tokenizer on the batches the trainer was served; "
            "token_passes: forward passes in full-encoder equivalents, a pass through k of the L layers counting "
            "k/L (MAML/LEOPARD re-run the adapted top layers on the support set each inner step, LEOPARD once "
            "more to generate its softmax), SimCSE encodes every sentence twice, zero-step MAML never encodes "
            "the support set; backward passes are not counted (about 2x the forward of the trained layers, more "
            "for second order). wall_seconds: the trainer's run (steps, final checkpoint, export)")


def normalise(text: str) -> str:
    """Lower-cased text with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


def target_test_sentences(target: str) -> set[str]:
    """Normalised sentences of ``target``'s test data: every labelled sentence of a class that is a
    test class in some ProtAugment split, and every sentence of ``fewshot_intent/<target>/test``."""
    ds = load_dataset(target)
    test_classes = {c for sid in ds.splits() for c in ds.split(sid).test}
    out = {normalise(t) for t, y in zip(ds.texts, ds.labels) if y in test_classes}
    return out | {normalise(t) for t in load_fewshot(target).test.texts}


def build_corpus(target: str, tokenizer=None) -> tuple[list[str], dict]:
    """The pre-training corpus for ``target`` and its counts.

    Wikipedia sentences + every dataset's unlabeled ``raw.txt``, less :func:`target_test_sentences`.
    Tokens are word pieces of ``tokenizer`` (no special tokens), or whitespace tokens when it is ``None``.
    """
    banned = target_test_sentences(target)
    kept: list[str] = []
    by_source = {}
    for name in ("wiki", *TARGETS):
        lines = load_unlabeled(name, progress=False)
        keep = [s for s in lines if normalise(s) not in banned]
        by_source[name] = {"sentences": len(lines), "kept": len(keep), "removed": len(lines) - len(keep)}
        kept += keep
    if tokenizer is None:
        tokens, unit = sum(len(s.split()) for s in kept), "whitespace tokens"
    else:
        ids = tokenizer(kept, add_special_tokens=False)["input_ids"]
        tokens, unit = sum(map(len, ids)), "word pieces of the encoder's tokenizer (no special tokens)"
    return kept, {"sentences": len(kept), "unique": len(set(kept)), "tokens": tokens, "token_unit": unit,
                  "target_test_sentences": len(banned), "by_source": by_source}


class CountingSource(TaskSource):
    """A task source that counts the sentences and non-padding tokens of the batches it serves."""

    def __init__(self, inner: TaskSource, tokenizer, max_length: int) -> None:
        self.inner, self.tokenizer, self.max_length = inner, tokenizer, max_length
        self.text, self.classification = inner.text, getattr(inner, "classification", True)
        self.counts = {"support_sentences": 0, "query_sentences": 0, "support_tokens": 0, "query_tokens": 0}

    def batch(self, step: int, size: int):
        ep = self.inner.batch(step, size)
        for part, tasks in (("support", ep.support_x), ("query", ep.query_x)):
            flat = [s for task in tasks for s in task]
            self.counts[f"{part}_sentences"] += len(flat)
            self.counts[f"{part}_tokens"] += sum(map(len, self.tokenizer(flat, truncation=True,
                                                                         max_length=self.max_length)["input_ids"]))
        return ep

    def valid_batches(self, size: int):
        return self.inner.valid_batches(size)

    def trained_on(self) -> dict:
        return self.inner.trained_on()


def pass_factors(variant: str, cfg: TrainConfig, layers: int) -> tuple[float, float]:
    """Forward passes, in full-encoder equivalents, per support and per query token."""
    top = layers if cfg.adapt == "all" else (0 if cfg.adapt == "head" else min(int(cfg.adapt[3:]), layers))
    return {"simcse": (2.0, 2.0), "supervised": (0.0, 1.0),
            "smlmt-maml": (1 + (cfg.inner_steps - 1) * top / layers, 1.0),  # body once, top layers per step
            "smlmt-leopard": (1 + cfg.inner_steps * top / layers, 1.0)}.get(variant, (1.0, 1.0))


def variant_config(variant: str, args, seed: int, corpus: Path, out: Path) -> TrainConfig:
    """The trainer's configuration of a variant: the same sizes, steps, optimizer and seed for all."""
    algo = {"mlm": "mlm", "simcse": "simcse", "supervised": "maml", "hybrid": "protonet"}.get(variant, variant[6:])
    task = {"mlm": "text", "simcse": "text", "supervised": "supervised", "hybrid": "mixture"}.get(variant, "smlmt")
    kw = dict(k_shot=args.k_shot, n_query=args.n_query, corpus=str(corpus), inner_steps=args.inner_steps)
    if variant == "supervised":  # zero-step MAML never encodes the support: the query carries the sentences
        kw = dict(k_shot=1, n_query=args.n_way * (args.k_shot + args.n_query), exclude=args.target,
                  overlap=args.overlap, inner_steps=0)
    if algo == "maml" and args.first_order and variant != "supervised":
        algo = "fomaml"
    return TrainConfig(algorithm=algo, task=task, encoder=args.encoder, n_way=args.n_way, meta_batch=args.meta_batch,
                       steps=args.steps, optimizer="adamw", meta_lr=args.lr, clip_grad=1.0, max_length=args.max_length,
                       freeze_layers=args.freeze_layers, seed=seed, out=str(out), overwrite=True, checkpoint_every=0,
                       keep_checkpoints=1, tensorboard=False, device=args.device_str, progress=args.progress,
                       **kw).resolved()


def variant_source(variant: str, cfg: TrainConfig, args) -> TaskSource:
    """The task source of a variant: the trainer's own, except Hybrid-SMLMT, whose intents come from
    every dataset but the target (less the overlap list) instead of one split of one dataset."""
    if variant != "hybrid":
        return build_source(cfg)
    from metabook.bench.overlap import read_overlap
    from metabook.bench.pretrain import datasets_source

    ns = SimpleNamespace(train_way=cfg.n_way, train_shot=cfg.k_shot, train_query=cfg.n_query, seed=cfg.seed,
                         data_dir=None)
    intents = datasets_source([d for d in TARGETS if d != args.target], ns, read_overlap(args.overlap, args.target))
    smlmt = SMLMTSource(read_corpus(cfg.corpus), cfg.n_way, cfg.k_shot, cfg.n_query, cfg.seed, corpus=cfg.corpus)
    return MixtureSource(intents, smlmt, 0.5, cfg.seed)


def train_variant(variant: str, args, seed: int, corpus: Path, out: Path) -> tuple[str | None, dict]:
    """Run the trainer for one variant and seed; the encoder to score and a record with its compute."""
    if variant == "none":
        return args.none_encoder, {"steps": 0, "sentences": 0, "tokens": 0, "token_passes": 0.0,
                                   "wall_seconds": 0.0, "encoder": args.encoder}
    cfg = variant_config(variant, args, seed, corpus, out)
    seed_everything(cfg.seed)  # as the trainer does before it builds the learner
    built = build(cfg)
    source = CountingSource(variant_source(variant, cfg, args), built.tokenizer, cfg.max_length)
    t0 = time.perf_counter()
    res = train_run(cfg, source=source, built=built)
    wall = time.perf_counter() - t0
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only the exported encoder is scored
    check_unseen(res.encoder_dir, args.target)  # its record: never trained on any class of the target
    layers = len(built.encoder.encoder.layer)
    fs, fq = pass_factors(variant, cfg, layers)
    c, k = source.counts, max(1, len(res.losses) // 10)
    second = {"fomaml": False, "maml": cfg.inner_steps > 0, "leopard": True}.get(cfg.algorithm)
    return str(res.encoder_dir), {
        "steps": res.step, "sentences": (c["support_sentences"] if fs else 0) + c["query_sentences"],
        "tokens": (c["support_tokens"] if fs else 0) + c["query_tokens"],
        "token_passes": fs * c["support_tokens"] + fq * c["query_tokens"], "wall_seconds": wall,
        "seconds_per_step": wall / max(res.step, 1), **c, "algorithm": cfg.algorithm, "task": cfg.task,
        "k_shot": cfg.k_shot, "n_query": cfg.n_query, "inner_steps": cfg.inner_steps, "second_order": second,
        "adapt": cfg.adapt, "layers": layers, "first_loss": sum(res.losses[:k]) / k,
        "final_loss": sum(res.losses[-k:]) / k, "trained_on": read_record(res.encoder_dir)["trained_on"],
        "unseen_check": "passed", "encoder_dir": str(res.encoder_dir)}


def none_encoder(spec: str, root: Path) -> str | None:
    """The encoder that variant ``none`` scores: ``None`` for MiniLM (the benchmarks' default), a
    folder as given, or ``tiny`` exported once to a folder."""
    if spec != "tiny":
        return None if spec == "minilm" else spec
    from metabook.bert import load_encoder
    from metabook.train import export_encoder

    model, tokenizer, info = load_encoder("tiny")
    return str(export_encoder(root / "none-tiny", model, tokenizer,
                              {"trained_on": {"task": "none"}, "steps": 0, "encoder": info}))


def _bench(module, argv: list[str], out: Path) -> dict:
    """Run a benchmark command in-process (its table goes to stderr) and read the JSON it writes."""
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    ns = p.parse_args([*argv, "--out", str(out), "--no-progress"])
    with contextlib.redirect_stdout(sys.stderr):
        module.run(ns)
    return json.loads(out.read_text())


def evaluate(init: str | None, args, seed: int, out: Path) -> dict:
    """Frozen-encoder scores of ``init`` (``None``: MiniLM) per episode and draw; ``seed`` picks both."""
    from metabook.bench import episodic, fullway

    out.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.target, "--seed", str(seed), "--runs-dir", str(out / "runs"), "--device",
              args.device_str, *(["--init", init] if init else [])]
    res: dict = {}
    if "episodic" in args.protocols:
        splits = ["--splits", *args.eval_splits] if args.eval_splits else []
        r = _bench(episodic, [*common, "--algo", "frozen", "--distance", args.distance, "--episodes",
                              str(args.episodes), "--k-shot", *map(str, args.episodic_k), *splits],
                   out / "episodic.json")
        res["episodic"] = {f"{k}shot": {"splits": r["splits"], "n_query_total": r["n_way"] * r["n_query"],
                                        "split_means": [s[f"{k}shot"]["mean"] for s in r["per_split"]],
                                        "accuracies": [s[f"{k}shot"]["accuracies"] for s in r["per_split"]]}
                           for k in r["k_shot"]}
    if "fullway" in args.protocols:
        for algo, name in (("frozen", "frozen"), ("logreg", "logreg"), ("protonet", "finetune"))[:2 + args.finetune]:
            r = _bench(fullway, [*common, "--splits", "fewshot", "--algo", algo, "--draws", str(args.draws),
                                 "--k-shot", *map(str, args.fullway_k), "--C", *map(str, args.C),
                                 "--freeze-layers", str(args.freeze_layers)],
                       out / f"fullway_{name}.json")
            res[f"fullway_{name}"] = {k: {key: v[key] for key in ("draws", "published_draw", "C") if key in v}
                                      for k, v in r["results"].items()}
    return res


def units(entry: dict, metric: str) -> list[list[float]]:
    """Per-unit accuracies of one seed: the episodes of each split (episodic) or each draw (full-way)."""
    proto, k = metric.rsplit("_", 1)
    m = entry.get(proto, {}).get(k)
    if m is None or proto != "episodic":
        return [] if m is None else [[float(d)] for d in m["draws"]]
    return [unpack_accuracies(a, m["n_query_total"]).tolist() for a in m["accuracies"]]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarise(results: dict, metrics: list[str]) -> tuple[dict, dict]:
    """Mean and t-interval of every variant's metric over seeds x units, and paired differences
    (variant minus baseline on the same episodes / draws) against each baseline that was run."""
    summary: dict = {}
    for v, seeds in results.items():
        summary[v] = {}
        for m in metrics:
            per = [[sum(u) / len(u) for u in units(e, m)] for e in seeds.values()]
            flat = [x for p in per for x in p]
            if flat:
                mean, half = t_interval(flat) if len(flat) > 1 else (flat[0], None)
                summary[v][m] = {"mean": mean, "ci95": _finite(half), "units": len(flat),
                                 "seed_means": [sum(p) / len(p) for p in per]}
    paired: dict = {}
    for v, seeds in results.items():
        for b in [b for b in (BASELINES[:BASELINES.index(v)] if v in BASELINES else BASELINES) if b in results]:
            for m in metrics:
                mine = [u for s in seeds for u in units(seeds[s], m)]
                base = [u for s in seeds for u in units(results[b].get(s, {}), m)]
                if mine and len(mine) == len(base):
                    d = paired_difference(mine, base)
                    paired.setdefault(v, {}).setdefault(b, {})[m] = {
                        "mean": d["mean"], "ci95": _finite(d["ci95"]), "units": d["splits"],
                        "episodes": d["episodes"], "unit_diffs": d["split_diffs"]}
    return summary, paired


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's options; sizes left at ``None`` are chosen by device in :func:`run`."""
    p.add_argument("--target", default=None, help=f"the dataset scored and never trained on: {', '.join(TARGETS)}")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"any of {', '.join(VARIANTS)} (default all)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="training (and episode/draw) seeds")
    p.add_argument("--encoder", default="minilm", help="starting encoder: minilm | tiny (tests) | a folder")
    p.add_argument("--steps", type=int, default=None, help="trainer steps per variant (100 on CPU, 1000 on GPU)")
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=None, help="default 2 on CPU, 5 on GPU")
    p.add_argument("--n-query", type=int, default=None, help="default 3 on CPU, 5 on GPU")
    p.add_argument("--meta-batch", type=int, default=None, help="tasks per step (default 4 on CPU, 16 on GPU)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per sentence (default 32 on CPU, 64 on GPU)")
    p.add_argument("--freeze-layers", type=int, default=None, help="embeddings + bottom N layers frozen (2 CPU, 0 GPU)")
    p.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate of every variant")
    p.add_argument("--inner-steps", type=int, default=1, help="smlmt-maml, smlmt-leopard: inner steps")
    p.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=None,
                   help="smlmt-maml as FOMAML (default: on a CPU; second order on a GPU)")
    p.add_argument("--overlap", default=None, help="overlap list (default benchmarks/results/overlap/<target>.json)")
    p.add_argument("--protocols", nargs="+", default=["episodic", "fullway"], help="episodic and/or fullway")
    p.add_argument("--episodes", type=int, default=600, help="episodic test episodes per split and K")
    p.add_argument("--eval-splits", nargs="+", default=None, help="episodic class splits (default all)")
    p.add_argument("--episodic-k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--distance", default="euclidean", choices=["euclidean", "cosine"], help="episodic prototypes")
    p.add_argument("--draws", type=int, default=5, help="full-way K-shot draws per seed")
    p.add_argument("--fullway-k", type=int, nargs="+", default=[5, 10])
    p.add_argument("--C", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0, 1000.0],
                   help="logistic regression: inverse regularisations to choose from on valid")
    p.add_argument("--finetune", action="store_true", help="also full-way K-shot fine-tuning (fullway --algo protonet)")
    p.add_argument("--runs-dir", default=None, help="trainer runs go to RUNS/metapretrain_<target> "
                                                    "(default $METABOOK_CACHE/runs)")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/metapretrain_<target>.json)")
    p.add_argument("--device", default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def _check(args) -> None:
    """Raise ``ValueError`` (one line) for bad options."""
    if args.target not in TARGETS:
        raise ValueError(f"--target must be one of {', '.join(TARGETS)}, got {args.target!r}")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or len(set(args.variants)) != len(args.variants):
        raise ValueError(f"--variants takes distinct names among {', '.join(VARIANTS)}; got {args.variants}")
    if not args.seeds or min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds needs at least one distinct seed >= 0, got {args.seeds}")
    if set(args.protocols) - {"episodic", "fullway"}:
        raise ValueError(f"--protocols takes episodic and/or fullway, got {args.protocols}")
    for name in ("steps", "n_way", "k_shot", "n_query", "meta_batch", "max_length", "inner_steps", "episodes", "draws",
                 "freeze_layers"):
        low = 0 if name == "freeze_layers" else 1
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if min(args.episodic_k + args.fullway_k) < 1:
        raise ValueError(f"--episodic-k and --fullway-k need K >= 1, got {args.episodic_k} and {args.fullway_k}")
    splits = load_dataset(args.target).splits()
    if set(args.eval_splits or []) - set(splits):
        raise ValueError(f"--eval-splits: {args.target} has the class splits {splits}, got {args.eval_splits}")
    if args.encoder not in ("minilm", "tiny"):
        check_unseen(args.encoder, args.target)


def run(args: argparse.Namespace) -> int:
    """Build the corpus, train and score every variant for every seed, write the JSON, print the tables."""
    _check(args)
    device = torch.device(args.device) if args.device else default_device()
    args.device_str = "cpu" if device.type == "cpu" else str(device)
    for name, cpu, gpu in (("steps", 100, 1000), ("k_shot", 2, 5), ("n_query", 3, 5), ("meta_batch", 4, 16),
                           ("max_length", 32, 64), ("freeze_layers", 2, 0), ("first_order", True, False)):
        if getattr(args, name) is None:
            setattr(args, name, by_device(cpu, gpu, device))
    rel = f"benchmarks/results/overlap/{args.target}.json"
    args.overlap = args.overlap or (rel if Path(rel).is_file() else str(Path(__file__).resolve().parents[2] / rel))
    if {"supervised", "hybrid"} & set(args.variants):
        from metabook.bench.overlap import read_overlap
        read_overlap(args.overlap, args.target)  # a missing or wrong list fails now, not after hours
    start, log = time.perf_counter(), lambda msg: print(f"[metapretrain] {msg}", file=sys.stderr, flush=True)
    from metabook.bert import load_encoder
    sentences, corpus = build_corpus(args.target, None if args.encoder == "tiny" else load_encoder(args.encoder)[1])
    root = Path(args.runs_dir or default_runs_dir()) / f"metapretrain_{args.target}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / "corpus.txt"
    path.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    corpus["path"] = str(path)
    log(f"corpus: {corpus['sentences']} sentences, {corpus['tokens']} {corpus['token_unit']} -> {path}")
    args.none_encoder = none_encoder(args.encoder, root)
    results: dict = {}
    for variant in args.variants:
        for seed in args.seeds:
            out = root / variant / f"seed_{seed}"
            init, train = train_variant(variant, args, seed, path, out)
            results.setdefault(variant, {})[str(seed)] = {"train": train, **evaluate(init, args, seed, out / "eval")}
            log(f"{variant} seed {seed}: {train['steps']} steps in {train['wall_seconds']:.0f} s, scored")
    metrics = [f"episodic_{k}shot" for k in args.episodic_k if "episodic" in args.protocols]
    fullway = ("frozen", "logreg", "finetune") if args.finetune else ("frozen", "logreg")
    metrics += [f"fullway_{a}_{k}shot" for a in fullway for k in args.fullway_k if "fullway" in args.protocols]
    summary, paired = summarise(results, metrics)
    keys = ("steps", "sentences", "tokens", "token_passes", "wall_seconds")
    compute = {v: {k: sum(s["train"][k] for s in r.values()) / len(r) for k in keys} for v, r in results.items()}
    result = {"benchmark": "metapretrain", **provenance("metapretrain"), "target": args.target,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "corpus": corpus,
              "compute": {"per_variant_mean_over_seeds": compute, "how": COUNTING}, "metrics": metrics,
              "summary": summary, "paired": paired, "results": results,
              "statistics": "t-intervals over seeds x splits (episodic split means) and seeds x draws (full-way); "
                            "units that share a split or a seed are not independent, so the intervals are "
                            "somewhat narrow. Paired differences: the same episodes and draws (same seed)",
              "seconds": time.perf_counter() - start, "versions": versions(), "hardware": hardware(device)}
    out = Path(args.out or f"benchmarks/results/metapretrain_{args.target}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"wrote {out}")
    return 0


def table(result: dict) -> str:
    """The results as markdown: compute and scores per variant, then paired differences."""
    cell = lambda s: ("" if not s else f"{s['mean']:.2f}"  # noqa: E731
                      + (f" ± {s['ci95']:.2f}" if s["ci95"] is not None else ""))
    ms, comp = result["metrics"], result["compute"]["per_variant_mean_over_seeds"]
    rows = [f"| variant | steps | token passes (k) | wall s | {' | '.join(ms)} |", "|---" * (4 + len(ms)) + "|"]
    for v, s in result["summary"].items():
        c = comp[v]
        rows.append(f"| {v} | {c['steps']:.0f} | {c['token_passes'] / 1e3:.1f} | {c['wall_seconds']:.0f} | "
                    + " | ".join(cell(s.get(m)) for m in ms) + " |")
    rows += ["", f"| variant | minus | {' | '.join(ms)} |", "|---" * (2 + len(ms)) + "|"]
    for v, by in result["paired"].items():
        for b, d in by.items():
            rows.append(f"| {v} | {b} | " + " | ".join(cell(d.get(m)) for m in ms) + " |")
    return "\n".join(rows)
