"""Full-way K-shot intent detection (DNNC / CPFT protocol): BANKING77 77-way, CLINC150 150-way.

For each draw, K labelled examples per class are drawn from the official train
split; they are the only labels of the target dataset that the method sees.  The
model is scored on the whole official test split by nearest prototype.

* ``frozen`` -- prototypes of frozen MiniLM embeddings;
* ``protonet`` -- (1) optional meta-pre-training of MiniLM with ProtoNet episodes on
  *other* labelled intent datasets (``--meta-data``, never the target), then
  (2) fine-tuning on the K shots alone, then prototypes of all K shots.  The
  default ``--shot-method fullway`` trains full-way ProtoNet with a prototype bank
  and leave-one-out prototypes (:func:`shot_finetune`); ``episodes`` uses N-way
  (K-1)-shot 1-query episodes drawn from the K-shot set.

``--smlmt-steps N`` first meta-trains on self-supervised SMLMT episodes built from
the target's unlabeled official-train sentences (no labels, no test sentences).
``--init`` starts from an encoder saved by ``python -m metabook.bench pretrain``
(refused if it was meta-trained on the target).  ``--eval-split valid`` scores
CLINC150's official valid split instead, for choosing settings without the test split.
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
from tqdm.auto import tqdm

from metabook.bench.episodic import _hardware, _versions, clipped_step, protonet_steps
from metabook.bench.pretrain import meta_pretrain
from metabook.data.intents import load_official
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


def shot_finetune(encoder, texts: list[str], labels: list[str], epochs: int, args, device, *,
                  batch_size: int = 32, seed: int = 0, progress: bool = True) -> list[float]:
    """Full-way ProtoNet fine-tuning of ``encoder`` on the K shots alone.

    Each epoch embeds every shot without gradients and keeps the per-class sums (a
    *prototype bank*).  Then, for mini-batches of shots embedded *with* gradients,
    the logits are ``args.scale`` times the cosine similarity to **all** class
    prototypes, the sentence's own class using its leave-one-out prototype (the mean
    of the class's other K-1 shots), and the loss is the cross-entropy.  This is a
    ProtoNet episode with every class as a negative, N-way (K-1)-shot, whose support
    embeddings are refreshed once per epoch.  Returns the per-batch losses.
    """
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need equally many texts and labels, got {len(texts)} and {len(labels)}")
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in labels], device=device)
    counts = torch.bincount(y, minlength=len(classes))
    if int(counts.min()) < 2:
        raise ValueError("every class needs at least 2 shots for leave-one-out prototypes")
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for epoch in range(epochs):
        encoder.eval()
        with torch.no_grad():
            bank = encoder.encode(texts, cache=None, progress=False).to(device)
        sums = torch.zeros(len(classes), bank.shape[1], device=device).index_add_(0, y, bank)
        protos = torch.nn.functional.normalize(sums / counts[:, None], dim=1)
        encoder.train()
        order = torch.randperm(len(texts), generator=gen).split(batch_size)
        for b in tqdm(order, desc=f"shots epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            b = b.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                e = encoder([texts[i] for i in b.tolist()]).float()
            yb = y[b]
            loo = torch.nn.functional.normalize((sums[yb] - bank[b]) / (counts[yb] - 1)[:, None], dim=1)
            logits = args.scale * (e @ protos.T)
            own = args.scale * (e * loo).sum(1)
            logits = logits.scatter(1, yb[:, None], own[:, None])
            loss = torch.nn.functional.cross_entropy(logits, yb)
            losses.append(clipped_step(loss, opt, params, f"shot fine-tuning, epoch {epoch + 1}"))
    encoder.eval()
    return losses


def smlmt_pretrain(encoder, texts: list[str], args, device, log=print) -> dict:
    """ProtoNet meta-training on SMLMT episodes (Bansal et al., 2020) from unlabeled ``texts``.

    The full-way protocol may use the target's unlabeled *train* sentences (never the
    test split): every episode asks which word was masked, so no intent label is used.
    """
    from metabook.data.smlmt import SMLMTSampler

    sampler = SMLMTSampler(texts, args.train_way, args.train_shot, args.train_query, seed=args.seed)
    encoder.freeze_layers(args.freeze_layers)
    t = time.perf_counter()
    losses = protonet_steps(encoder, sampler, args.smlmt_steps, args, device, desc="SMLMT")
    log(f"SMLMT meta-training: {args.smlmt_steps} steps over {len(sampler.words)} words "
        f"from {len(sampler.sentences)} unlabeled train sentences")
    k = max(1, len(losses) // 10)
    return {"steps": args.smlmt_steps, "sentences": len(sampler.sentences), "words": len(sampler.words),
            "first_loss": sum(losses[:k]) / k, "final_loss": sum(losses[-k:]) / k,
            "seconds": time.perf_counter() - t}


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, choices=["banking77", "clinc150"])
    p.add_argument("--algo", default="protonet", choices=["frozen", "protonet"])
    p.add_argument("--k-shot", type=int, nargs="+", default=[5, 10])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--init", default=None,
                   help="start from an encoder saved by `python -m metabook.bench pretrain` instead of "
                        "meta-pre-training here (refused if it was meta-trained on --data)")
    p.add_argument("--smlmt-steps", type=int, default=0,
                   help="self-supervised ProtoNet meta-training on SMLMT episodes built from the "
                        "target's official *train* sentences with their labels dropped (0: off)")
    p.add_argument("--meta-data", nargs="*", default=None,
                   help="other labelled datasets for meta-pre-training with --meta-steps "
                        "(default: the two that are not --data)")
    p.add_argument("--meta-steps", type=int, default=0, help="ProtoNet steps on --meta-data before the shots (0: off)")
    p.add_argument("--shot-method", default="fullway", choices=["fullway", "episodes"],
                   help="fine-tuning on the K shots: full-way ProtoNet with a prototype bank "
                        "(shot_finetune), or N-way (K-1)-shot 1-query episodes (protonet_steps)")
    p.add_argument("--shot-epochs", type=int, default=None, help="--shot-method fullway: epochs over the shots")
    p.add_argument("--shot-steps", type=int, default=None, help="--shot-method episodes: steps")
    p.add_argument("--eval-split", default="test", choices=["test", "valid"],
                   help="score on the official test split, or on the valid split (CLINC150) for tuning")
    p.add_argument("--train-way", type=int, default=10)
    p.add_argument("--train-shot", type=int, default=5)
    p.add_argument("--train-query", type=int, default=5)
    p.add_argument("--freeze-layers", type=int, default=None)
    p.add_argument("--lr", type=float, default=5e-5, help="chosen on CLINC150's valid split")
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    if args.shot_steps is None:
        args.shot_steps = by_device(100, 500, device)
    if args.shot_epochs is None:
        args.shot_epochs = by_device(4, 10, device)
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
    if args.eval_split == "valid":
        if official.valid is None:
            raise ValueError(f"{args.data} has no official valid split; --eval-split valid needs one")
        test = official.valid
    start = time.perf_counter()
    base = MiniLMEncoder(device=device)
    info: dict = {}
    if args.init:
        from metabook.bench.pretrain import load_pretrained
        side = load_pretrained(base, args.init, target=args.data)
        info["init"] = {"path": str(args.init), "sha256": side["sha256"], "command": side.get("command")}
        info["meta_pretrain"] = side.get("meta_pretrain")
    elif args.algo == "protonet" and args.meta_data and args.meta_steps > 0:
        info["meta_pretrain"] = meta_pretrain(base, args.meta_data, args, device, log)
    if args.algo == "protonet" and args.smlmt_steps > 0:
        info["smlmt"] = smlmt_pretrain(base, train.texts, args, device, log)
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
                trained = False
                if args.shot_method == "fullway" and args.shot_epochs > 0:
                    shot_finetune(enc, shot_texts, shot_labels, args.shot_epochs, args, device,
                                  seed=args.seed + 100 * d + k)
                    trained = True
                elif args.shot_method == "episodes" and args.shot_steps > 0:
                    sampler = EpisodeSampler(shot_labels, min(args.train_way, len(set(shot_labels))), k - 1, 1,
                                             data=shot_texts, seed=args.seed + 100 * d + k)
                    protonet_steps(enc, sampler, args.shot_steps, args, device, desc=f"{k}-shot draw {d}")
                    trained = True
                acc = prototype_accuracy(enc, shot_texts, shot_labels, test.texts, test.labels, "cosine",
                                         None if trained else True)
                del enc
            accs.append(acc)
            log(f"{args.data} {args.algo} {k}-shot draw {d}: {acc:.2f}")
        arr = np.asarray(accs)
        results[f"{k}shot"] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                               "ci95": mean_ci(arr)[1], "draws": accs}
    result = {
        "benchmark": "fullway", "command": "python -m metabook.bench fullway " + " ".join(sys.argv[2:]),
        "data": args.data, "algo": args.algo, "classes": len(set(train.labels)), "eval_split": args.eval_split,
        "test_size": len(test.texts),
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
