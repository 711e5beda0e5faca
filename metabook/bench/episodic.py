"""Episodic N-way K-shot intent detection (ProtAugment protocol), frozen vs meta-trained MiniLM.

For each class split: meta-train on the split's *train* classes, select the
checkpoint on its *valid* classes, and test on its *test* classes with
``--episodes`` episodes per K.  Reports the mean accuracy with a 95% CI over all
test episodes of all splits.  ``--data`` takes a registered name or any folder
in the ProtAugment layout.

Algorithms:

* ``frozen`` -- nearest prototype on frozen MiniLM embeddings (no training);
* ``protonet`` -- ProtoNet meta-training that fine-tunes the MiniLM encoder itself, run by
  the trainer (:func:`metabook.train.run`) with validation on the split's valid classes;
  the encoder it exports is scored;
* ``maml``, ``fomaml``, ``anil``, ``metasgd``, ``reptile`` -- a head on frozen MiniLM
  embeddings (a 384x384 linear map, identity at the start, then a zero-initialised
  output layer), meta-learned with the named algorithm.  Because the output layer
  starts at zero, the first inner step on the support set sets each class's weights
  to a multiple of its centred support mean: a prototype-like rule, close to but not
  the same as Triantafillou et al.'s Proto-MAML initialisation.  The trainer runs them too,
  on a :class:`~metabook.train.sources.SamplerSource` of cached embeddings.

``--init`` starts from an encoder folder exported by the trainer (for example by
``python -m metabook.bench pretrain``); it is refused if it saw the target's classes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from metabook.algorithms import MAML, ANIL, MetaSGD, ProtoNet, Reptile
from metabook.bench.common import default_runs_dir, hardware, provenance, versions
from metabook.bench.stats import pack_accuracies, t_interval
from metabook.data.intents import IntentDataset, load_dataset
from metabook.device import by_device, default_device, seed_everything
from metabook.tasks import EpisodeSampler
from metabook.train import Built, TrainConfig, check_unseen, mean_ci, run as train_run
from metabook.train.sources import SamplerSource

ALGOS = ("frozen", "protonet", "maml", "fomaml", "anil", "metasgd", "reptile")


def encode_classes(encoder, ds: IntentDataset, classes: list[str], cache,
                   per_class: int | None = None, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings and labels of the utterances of ``classes`` (at most ``per_class`` each)."""
    keep = set(classes)
    idx = [i for i, lab in enumerate(ds.labels) if lab in keep]
    if per_class is not None:
        rng = np.random.default_rng(seed)
        by: dict[str, list[int]] = {}
        for i in idx:
            by.setdefault(ds.labels[i], []).append(i)
        idx = sorted(j for v in by.values() for j in rng.permutation(v)[:per_class].tolist())
    emb = encoder.encode([ds.texts[i] for i in idx], cache=cache)
    return emb, np.asarray([ds.labels[i] for i in idx])


def test_accuracies(predict: Callable, emb: torch.Tensor, labels: np.ndarray, n_way: int, k_shot: int,
                    n_query: int, episodes: int, seed: int, device) -> list[float]:
    """Accuracy (%) of ``predict`` on ``episodes`` test episodes drawn from embeddings."""
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query, data=emb, seed=seed)
    accs = []
    for i in range(episodes):
        ep = sampler.episode(i).to(device)
        pred = predict(ep.support_x[None], ep.support_y[None], ep.query_x[None])[0]
        accs.append(100.0 * (pred == ep.query_y).float().mean().item())
    return accs


def center_embeddings(emb: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Subtract ``mean`` and re-normalise to unit length (SimpleShot's CL2N, Wang et al. 2019).

    MiniLM's embeddings share a large common component; removing the mean of the
    *training* classes' embeddings spreads the test classes apart, most of all at 1-shot.
    """
    if mean.shape != emb.shape[-1:]:
        raise ValueError(f"mean has shape {tuple(mean.shape)}, expected ({emb.shape[-1]},)")
    return torch.nn.functional.normalize(emb - mean.to(emb), dim=-1)


def proto_predict(distance: str) -> Callable:
    net = ProtoNet(distance=distance)
    return lambda sx, sy, qx: net.predict(sx, sy, qx)


# -- meta-training the encoder (ProtoNet), by the trainer ----------------------------------
def finetune_encoder(data: str, split_id: str, args, device, init: str, out: Path):
    """ProtoNet meta-training of MiniLM (``init``: ``"minilm"`` or an encoder folder) on the split's
    train classes by :func:`metabook.train.run`; the trainer keeps the checkpoint with the best
    1-shot accuracy on valid-class episodes (step 0 included).  Returns the exported encoder
    (a :class:`~metabook.MiniLMEncoder`) and a summary of the run."""
    from metabook.encoders import MiniLMEncoder

    cfg = TrainConfig(task="intents", data=data, split=split_id, algorithm="protonet", encoder=init,
                      n_way=args.train_way, k_shot=args.train_shot, n_query=args.train_query, meta_batch=1,
                      steps=args.train_steps, optimizer="adamw", meta_lr=args.lr, clip_grad=1.0, scale=args.scale,
                      freeze_layers=args.freeze_layers, max_length=args.max_length, val_every=args.val_every,
                      val_episodes=args.val_episodes, val_shot=1, seed=args.seed, out=str(out), overwrite=True,
                      checkpoint_every=0, keep_checkpoints=1, tensorboard=False,
                      device="cpu" if device.type == "cpu" else str(device), progress=args.progress)
    res = train_run(cfg)
    encoder = MiniLMEncoder(res.encoder_dir, device=device)
    return encoder, {"best_step": res.best_step, "best_valid_acc_1shot": res.best_score,
                     "history": [{"step": s, "valid_acc_1shot": a} for s, a in res.evals],
                     "final_train_loss": res.losses[-1] if res.losses else None, "run": str(out)}


# -- meta-learned heads on frozen embeddings ------------------------------------------------
class ProtoHead(nn.Module):
    """A linear head whose weights start at the prototypes' linear-classifier form."""

    def __init__(self, dim: int, n_way: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.out = nn.Linear(dim, n_way)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.proj(x))


def make_head_learner(algo: str, dim: int, n_way: int, args):
    head = ProtoHead(dim, n_way)
    steps, lr = args.inner_steps, args.inner_lr
    if algo == "maml":
        return MAML(head, lr, steps)
    if algo == "fomaml":
        return MAML(head, lr, steps, first_order=True)
    if algo == "anil":
        return ANIL(head, lr, steps, head="out")
    if algo == "metasgd":
        return MetaSGD(head, lr, steps)
    if algo == "reptile":
        return Reptile(head, lr, steps, outer_lr=0.1)
    raise ValueError(f"unknown algorithm {algo!r}")


def head_predict(learner) -> Callable:
    # Zero-initialised output layer: the support set decides the class weights.
    return learner.predict


def train_head(learner, emb: torch.Tensor, labels: np.ndarray, args, device, split_id: str, out: Path) -> dict:
    """Meta-train a head learner on cached train-class embeddings with :func:`metabook.train.run`."""
    sampler = EpisodeSampler(labels, args.n_way, args.train_shot, args.train_query, data=emb, seed=args.seed)
    reptile = isinstance(learner, Reptile)
    cfg = TrainConfig(task="custom", algorithm=args.algo, steps=args.head_steps, meta_batch=args.meta_batch,
                      optimizer="sgd" if reptile else "adam", meta_lr=0.1 if reptile else args.head_lr,
                      seed=args.seed, out=str(out), overwrite=True, checkpoint_every=0, keep_checkpoints=1,
                      tensorboard=False, device="cpu" if device.type == "cpu" else str(device),
                      progress=args.progress)
    source = SamplerSource(sampler, text=False, trained_on={"data": args.data, "split": split_id})
    res = train_run(cfg, source=source, built=Built(learner))
    return {"final_loss": res.losses[-1] if res.losses else None, "run": str(out)}


# -- command line ---------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="banking77 | clinc150 | hwu64 | a ProtAugment-layout folder")
    p.add_argument("--algo", default="protonet", choices=ALGOS)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n-query", type=int, default=5)
    p.add_argument("--episodes", type=int, default=600, help="test episodes per split and K")
    p.add_argument("--splits", nargs="+", default=None, help="default: every split of the dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--init", default=None,
                   help="start from an encoder folder exported by the trainer, e.g. by "
                        "`python -m metabook.bench pretrain` (refused if it saw --data's classes)")
    # ProtoNet encoder meta-training (defaults: small on CPU, full on GPU)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--train-way", type=int, default=None)
    p.add_argument("--train-shot", type=int, default=None)
    p.add_argument("--train-query", type=int, default=None)
    p.add_argument("--freeze-layers", type=int, default=None, help="freeze embeddings + bottom N layers")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--scale", type=float, default=20.0, help="cosine logit scale")
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--val-episodes", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=20, help="valid sentences encoded per class")
    # heads on frozen embeddings
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=0.5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--head-steps", type=int, default=200)
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--distance", default="euclidean", choices=["euclidean", "cosine"],
                   help="frozen baseline's distance")
    p.add_argument("--center", default="none", choices=["none", "train"],
                   help="train: subtract the train classes' mean embedding and re-normalise (CL2N)")
    p.add_argument("--center-per-class", type=int, default=50,
                   help="train sentences per class used for the --center mean")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence during meta-training")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/episodic_<data>_<algo>.json)")
    p.add_argument("--runs-dir", default=None, help="trainer runs (default $METABOOK_CACHE/runs)")
    p.add_argument("--device", default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def _defaults(args, device) -> None:
    big = device.type != "cpu"
    if args.train_steps is None:
        args.train_steps = by_device(250, 2000, device)
    if args.train_way is None:
        args.train_way = by_device(5, 10, device)
    if args.train_shot is None:
        args.train_shot = by_device(2, 5, device)
    if args.train_query is None:
        args.train_query = by_device(3, 5, device)
    if args.freeze_layers is None:
        args.freeze_layers = 0 if big else 2
    if args.val_every is None:
        args.val_every = max(args.train_steps // 3, 1)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    _defaults(args, device)
    seed_everything(args.seed)
    from metabook.encoders import MiniLMEncoder

    ds = load_dataset(args.data, data_dir=args.data_dir)
    splits = args.splits or ds.splits()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    start = time.perf_counter()
    per_split, all_accs = [], {k: [] for k in args.k_shot}
    uncentered: dict[int, list[float]] = {k: [] for k in args.k_shot}
    init = None
    if args.init:
        check_unseen(args.init, args.data)  # refuses an encoder that saw any class of the target
        init = _init_record(args.init)
    base_encoder = MiniLMEncoder(args.init, device=device)
    name = os.path.basename(str(args.data).rstrip("/"))
    runs = Path(args.runs_dir or default_runs_dir()) / f"episodic_{name}_{args.algo}"
    for sid in splits:
        t0 = time.perf_counter()
        split = ds.split(sid)
        info: dict = {"split": sid, "train_classes": len(split.train), "valid_classes": len(split.valid),
                      "test_classes": len(split.test)}
        if args.algo == "protonet" and args.train_steps > 0:
            encoder, info["meta_train"] = finetune_encoder(args.data, sid, args, device, args.init or "minilm",
                                                           runs / f"split_{sid}")
            check_unseen(encoder.model_id, args.data, split.test)
            predict, cache = proto_predict("cosine"), None
        else:
            encoder, cache = base_encoder, True
            predict = proto_predict("cosine" if args.algo == "protonet" else args.distance)
        test_emb, test_labels = encode_classes(encoder, ds, split.test, cache)
        plain_emb = test_emb
        if args.center == "train":  # CL2N with the mean of (a sample of) the train classes' embeddings
            mean = encode_classes(encoder, ds, split.train, cache, per_class=args.center_per_class,
                                  seed=args.seed)[0].mean(0)
            test_emb = center_embeddings(test_emb, mean)
        if args.algo not in ("frozen", "protonet"):
            train_emb, train_labels = encode_classes(encoder, ds, split.train, cache)
            if args.center == "train":
                train_emb = center_embeddings(train_emb, mean)
            learner = make_head_learner(args.algo, train_emb.shape[1], args.n_way, args)
            info["meta_train"] = train_head(learner, train_emb, train_labels, args, device, sid,
                                            runs / f"split_{sid}")
            predict = head_predict(learner)
        for k in args.k_shot:
            t_eval = time.perf_counter()
            accs = test_accuracies(predict, test_emb.to(device), test_labels, args.n_way, k, args.n_query,
                                   args.episodes, seed=args.seed, device=device)
            t_eval = time.perf_counter() - t_eval  # sampling + prediction from embeddings, no encoding
            all_accs[k].extend(accs)
            m, ci = mean_ci(accs)
            info[f"{k}shot"] = {"mean": m, "ci95": ci, "episodes": len(accs), "eval_seconds": t_eval,
                                "accuracies": pack_accuracies(accs, args.n_way * args.n_query)}
            if args.center == "train" and args.algo in ("frozen", "protonet"):  # the same episodes, uncentred
                plain = test_accuracies(predict, plain_emb.to(device), test_labels, args.n_way, k, args.n_query,
                                        args.episodes, seed=args.seed, device=device)
                uncentered[k].extend(plain)
                info[f"{k}shot_uncentered"] = dict(zip(("mean", "ci95"), mean_ci(plain)))
            log(f"{args.data} {args.algo} split {sid} {args.n_way}-way {k}-shot: {m:.2f} ± {ci:.2f}")
        info["seconds"] = time.perf_counter() - t0
        per_split.append(info)
    summary = {}
    for k, accs in all_accs.items():
        m, ci = mean_ci(accs)
        split_means = [s[f"{k}shot"]["mean"] for s in per_split]
        summary[f"{k}shot"] = {"mean": m, "ci95": ci, "episodes": len(accs), "split_means": split_means,
                               "ci95_splits": t_interval(split_means)[1] if len(split_means) > 1 else None,
                               "max_eval_seconds": max(s[f"{k}shot"]["eval_seconds"] for s in per_split)}
        if uncentered[k]:
            m, ci = mean_ci(uncentered[k])
            summary[f"{k}shot_uncentered"] = {"mean": m, "ci95": ci, "episodes": len(uncentered[k])}
    result = {
        "benchmark": "episodic", **provenance("episodic"),
        "data": args.data, "algo": args.algo, "n_way": args.n_way, "k_shot": args.k_shot,
        "n_query": args.n_query, "episodes_per_split": args.episodes, "splits": splits, "seed": args.seed,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "init": init,
        "summary": summary, "per_split": per_split, "seconds": time.perf_counter() - start,
        "versions": versions(), "hardware": hardware(device),
    }
    out = args.out or f"benchmarks/results/episodic_{os.path.basename(str(args.data).rstrip('/'))}_{args.algo}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print("| data | algo | " + " | ".join(f"{args.n_way}-way {k}-shot" for k in args.k_shot) + " |")
    print("|---|---|" + "---|" * len(args.k_shot))
    print(f"| {args.data} | {args.algo} | " + " | ".join(
        f"{summary[f'{k}shot']['mean']:.2f} ± {summary[f'{k}shot']['ci95']:.2f}" for k in args.k_shot) + " |")
    print(f"wrote {out}")
    return 0


def _init_record(folder: str) -> dict:
    """Where an ``--init`` encoder came from: its folder, training record and weights' SHA-256."""
    import hashlib

    from metabook.train import read_record

    rec = read_record(folder) or {}
    weights = sorted(Path(folder).glob("*.safetensors"))
    sha = hashlib.sha256(b"".join(w.read_bytes() for w in weights)).hexdigest() if weights else None
    return {"path": str(folder), "sha256": sha, "command": rec.get("command"), "git_sha": rec.get("git_sha"),
            "trained_on": rec.get("trained_on"), "steps": rec.get("steps")}
