"""Cross-dataset ProtoNet meta-pre-training of MiniLM, for ``episodic --init`` and ``fullway --init``.

For a *target* dataset, MiniLM is meta-trained by the trainer (:func:`metabook.train.run`)
with ProtoNet episodes drawn from every class of the **other** labelled intent datasets
(never the target).  The encoder is exported as a Hugging Face folder
``<out>/encoder`` whose ``metabook.json`` records the datasets, so ``--init`` refuses
it for a target it has seen.  A copy of that record goes to ``--record``.  One
pre-trained encoder per target serves all class splits and all K-shot draws.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from metabook.bench.common import default_runs_dir, hardware, provenance, versions
from metabook.data.intents import load_dataset
from metabook.device import by_device, default_device
from metabook.tasks import EpisodeSampler
from metabook.train import TrainConfig, TrainedOnError, run as train_run
from metabook.train.sources import SamplerSource

DATASETS = ("banking77", "clinc150", "hwu64")


def default_out(exclude: str) -> Path:
    """``$METABOOK_CACHE/runs/pretrain_no-<exclude>`` (or under ``~/.cache/metabook``)."""
    return Path(default_runs_dir()) / f"pretrain_no-{exclude}"


def datasets_source(names: list[str], args, remove: dict[str, set[str]] | None = None) -> SamplerSource:
    """ProtoNet episodes over every class of the datasets ``names``, less the intents in
    ``remove`` (``{dataset: {intent, ...}}``, e.g. from ``--overlap``); class names are prefixed
    with their dataset's name, so equal names in two datasets stay distinct."""
    texts, labels = [], []
    remove = remove or {}
    for name in names:
        ds = load_dataset(name, data_dir=args.data_dir)
        drop = remove.get(name, set())
        unknown = drop - set(ds.class_names)
        if unknown:
            raise ValueError(f"the overlap list names intents that {name} lacks, e.g. {sorted(unknown)[0]!r}")
        keep = [i for i, c in enumerate(ds.labels) if c not in drop]
        texts += [ds.texts[i] for i in keep]
        labels += [f"{name}:{ds.labels[i]}" for i in keep]
    sampler = EpisodeSampler(labels, args.train_way, args.train_shot, args.train_query, data=texts,
                             seed=args.seed, drop_small_classes=True)
    removed = {d: sorted(v) for d, v in remove.items() if d in names and v}
    return SamplerSource(sampler, trained_on={"task": "datasets", "datasets": list(names),
                                              "classes": len(sampler.classes),
                                              **({"removed_overlap": removed} if removed else {})})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", required=True, choices=DATASETS, help="the target dataset; never used")
    p.add_argument("--meta-data", nargs="+", default=None, help="default: the datasets other than --exclude")
    p.add_argument("--meta-steps", type=int, default=None)
    p.add_argument("--train-way", type=int, default=10)
    p.add_argument("--train-shot", type=int, default=2)
    p.add_argument("--train-query", type=int, default=2)
    p.add_argument("--freeze-layers", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="run folder (default $METABOOK_CACHE/runs/pretrain_no-<exclude>); "
                                               "the encoder goes to OUT/encoder")
    p.add_argument("--record", default=None,
                   help="copy of the encoder's metabook.json for the results folder "
                        "(default benchmarks/results/pretrain_no-<exclude>.json)")
    p.add_argument("--overlap", default=None,
                   help="an overlap list (`python -m metabook.bench overlap --target EXCLUDE`): its intents "
                        "are removed from the other datasets first")
    p.add_argument("--device", default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    if args.meta_steps is None:
        args.meta_steps = by_device(400, 3000, device)
    if args.freeze_layers is None:
        args.freeze_layers = 0 if device.type != "cpu" else 2
    if args.meta_data is None:
        args.meta_data = [n for n in DATASETS if n != args.exclude]
    if args.exclude in args.meta_data:
        raise TrainedOnError("--meta-data must not include the excluded target dataset")
    out = Path(args.out or default_out(args.exclude))
    cfg = TrainConfig(task="intents", algorithm="protonet", encoder="minilm", n_way=args.train_way,
                      k_shot=args.train_shot, n_query=args.train_query, meta_batch=1, steps=args.meta_steps,
                      optimizer="adamw", meta_lr=args.lr, clip_grad=1.0, scale=args.scale,
                      freeze_layers=args.freeze_layers, max_length=args.max_length, seed=args.seed, out=str(out),
                      overwrite=True, checkpoint_every=0, keep_checkpoints=1, tensorboard=False,
                      device="cpu" if device.type == "cpu" else str(device), progress=args.progress)
    remove = None
    if args.overlap:
        from metabook.bench.overlap import read_overlap
        remove = read_overlap(args.overlap, args.exclude)
    res = train_run(cfg, source=datasets_source(args.meta_data, args, remove))
    record = Path(args.record or f"benchmarks/results/pretrain_no-{args.exclude}.json")
    record.parent.mkdir(parents=True, exist_ok=True)
    rec = json.loads((res.encoder_dir / "metabook.json").read_text())
    k = max(1, len(res.losses) // 10)
    rec["meta_pretrain"] = {"datasets": list(args.meta_data), "steps": res.step, "overlap": args.overlap,
                            "removed": {d: len(v) for d, v in (remove or {}).items()},
                            "first_loss": sum(res.losses[:k]) / k, "final_loss": sum(res.losses[-k:]) / k}
    rec.update(provenance("pretrain"))  # the command that rewrites this record, and the code's commit
    rec["versions"], rec["hardware"] = versions(), hardware(device)
    record.write_text(json.dumps(rec, indent=2))
    print(f"wrote {res.encoder_dir} and {record}")
    return 0
