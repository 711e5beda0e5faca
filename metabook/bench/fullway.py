"""Full-way K-shot intent detection (DNNC / CPFT protocol): BANKING77 77-way, CLINC150 150-way.

For each draw, K labelled examples per class are drawn from the official train
split; they are the only labels of the target dataset that the method sees.  The
model is scored on the whole official test split by nearest prototype.

* ``frozen`` -- prototypes of frozen MiniLM embeddings;
* ``protonet`` -- (1) optional meta-pre-training of MiniLM with ProtoNet episodes on
  *other* labelled intent datasets (``--meta-data``, never the target), then
  (2) episodic fine-tuning on the K shots alone (N-way (K-1)-shot 1-query
  episodes drawn from the K-shot set), then prototypes of all K shots.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

from metabook.bench.episodic import _hardware, _versions, protonet_steps
from metabook.data.intents import load_dataset, load_official
from metabook.device import by_device, default_device, seed_everything
from metabook.algorithms import ProtoNet
from metabook.tasks import EpisodeSampler
from metabook.train import mean_ci


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


@torch.no_grad()
def prototype_accuracy(encoder, shot_texts, shot_labels, test_texts, test_labels, distance: str, cache) -> float:
    """Accuracy (%) of nearest-prototype classification of the test split."""
    classes = sorted(set(shot_labels))
    index = {c: i for i, c in enumerate(classes)}
    s_emb = encoder.encode(shot_texts, cache=cache)
    q_emb = encoder.encode(test_texts, cache=cache)
    sy = torch.tensor([index[c] for c in shot_labels])
    qy = torch.tensor([index[c] for c in test_labels])
    pred = ProtoNet(distance=distance).predict(s_emb, sy, q_emb)
    return 100.0 * (pred == qy).double().mean().item()


def meta_pretrain(encoder, names: list[str], args, device, log) -> dict:
    """ProtoNet meta-training on every class of the ``--meta-data`` datasets (not the target)."""
    texts, labels = [], []
    for name in names:
        ds = load_dataset(name, data_dir=args.data_dir)
        texts += ds.texts
        labels += [f"{name}:{c}" for c in ds.labels]
    sampler = EpisodeSampler(labels, args.train_way, args.train_shot, args.train_query, data=texts,
                             seed=args.seed, drop_small_classes=True)
    encoder.freeze_layers(args.freeze_layers)
    t = time.perf_counter()
    losses = protonet_steps(encoder, sampler, args.meta_steps, args, device, desc="meta-pretrain")
    log(f"meta-pretrained on {names} ({len(sampler.classes)} classes) for {args.meta_steps} steps")
    return {"datasets": names, "classes": len(sampler.classes), "steps": args.meta_steps,
            "final_loss": losses[-1] if losses else None, "seconds": time.perf_counter() - t}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, choices=["banking77", "clinc150"])
    p.add_argument("--algo", default="protonet", choices=["frozen", "protonet"])
    p.add_argument("--k-shot", type=int, nargs="+", default=[5, 10])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--meta-data", nargs="*", default=None,
                   help="other labelled datasets for meta-pre-training (default: the two that are not --data)")
    p.add_argument("--meta-steps", type=int, default=None)
    p.add_argument("--shot-steps", type=int, default=None, help="fine-tuning steps on the K shots")
    p.add_argument("--train-way", type=int, default=10)
    p.add_argument("--train-shot", type=int, default=5)
    p.add_argument("--train-query", type=int, default=5)
    p.add_argument("--freeze-layers", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    if args.meta_steps is None:
        args.meta_steps = by_device(300, 3000, device)
    if args.shot_steps is None:
        args.shot_steps = by_device(100, 500, device)
    if args.freeze_layers is None:
        args.freeze_layers = 0 if device.type != "cpu" else 2
    if args.meta_data is None:
        args.meta_data = [n for n in ("banking77", "clinc150", "hwu64") if n != args.data]
    if args.data in args.meta_data:
        raise ValueError("--meta-data must not include the target dataset (--data)")
    seed_everything(args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    from metabook.encoders import MiniLMEncoder

    official = load_official(args.data, data_dir=args.data_dir)
    train, test = official.train, official.test
    start = time.perf_counter()
    base = MiniLMEncoder(device=device)
    info: dict = {}
    if args.algo == "protonet" and args.meta_data and args.meta_steps > 0:
        info["meta_pretrain"] = meta_pretrain(base, args.meta_data, args, device, log)
    results = {}
    for k in args.k_shot:
        accs = []
        for d in range(args.draws):
            idx = draw_shots(train.labels, k, seed=args.seed + d)
            shot_texts = [train.texts[i] for i in idx]
            shot_labels = [train.labels[i] for i in idx]
            if args.algo == "frozen":
                acc = prototype_accuracy(base, shot_texts, shot_labels, test.texts, test.labels, "euclidean", True)
            else:
                enc = copy.deepcopy(base)
                enc.freeze_layers(args.freeze_layers)
                if args.shot_steps > 0:
                    sampler = EpisodeSampler(shot_labels, min(args.train_way, len(set(shot_labels))), k - 1, 1,
                                             data=shot_texts, seed=args.seed + 100 * d + k)
                    protonet_steps(enc, sampler, args.shot_steps, args, device, desc=f"{k}-shot draw {d}")
                acc = prototype_accuracy(enc, shot_texts, shot_labels, test.texts, test.labels, "cosine", None)
                del enc
            accs.append(acc)
            log(f"{args.data} {args.algo} {k}-shot draw {d}: {acc:.2f}")
        arr = np.asarray(accs)
        results[f"{k}shot"] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                               "ci95": mean_ci(arr)[1], "draws": accs}
    result = {
        "benchmark": "fullway", "command": "python -m metabook.bench fullway " + " ".join(sys.argv[2:]),
        "data": args.data, "algo": args.algo, "classes": len(set(train.labels)), "test_size": len(test.texts),
        "settings": {k: v for k, v in vars(args).items() if k != "out"}, **info, "results": results,
        "seconds": time.perf_counter() - start, "versions": _versions(), "hardware": _hardware(device),
    }
    out = args.out or f"benchmarks/results/fullway_{args.data}_{args.algo}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print("| data | algo | " + " | ".join(f"{k}-shot" for k in args.k_shot) + " |")
    print("|---|---|" + "---|" * len(args.k_shot))
    print(f"| {args.data} | {args.algo} | " + " | ".join(
        f"{results[f'{k}shot']['mean']:.2f} ± {results[f'{k}shot']['std']:.2f}" for k in args.k_shot) + " |")
    print(f"wrote {out}")
    return 0
