"""Cross-dataset ProtoNet meta-pre-training of MiniLM, saved for the episodic and full-way benchmarks.

For a *target* dataset, MiniLM is meta-trained with ProtoNet episodes drawn from
every class of the **other** labelled intent datasets (never the target), and the
weights are saved as ``<out>.safetensors`` with a JSON sidecar ``<out>.json``
(command, datasets, steps, SHA-256 of the weights).  ``episodic --init`` and
``fullway --init`` load it and refuse it when its datasets include their target.
One pre-trained encoder per target serves all class splits and all K-shot draws.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metabook.data.intents import load_dataset
from metabook.device import by_device, default_device, seed_everything
from metabook.tasks import EpisodeSampler

DATASETS = ("banking77", "clinc150", "hwu64")
_FORMAT = "metabook-pretrained-encoder-v1"


class PretrainLeakError(ValueError):
    """A pre-trained encoder was meta-trained on the dataset it is about to be scored on."""


def default_out(exclude: str) -> Path:
    """``$METABOOK_CACHE/pretrained/protonet_no-<exclude>`` (or under ``~/.cache/metabook``)."""
    root = os.environ.get("METABOOK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "metabook"
    return base / "pretrained" / f"protonet_no-{exclude}"


def meta_pretrain(encoder, names: list[str], args, device, log=print) -> dict:
    """ProtoNet meta-training of ``encoder`` on every class of the datasets ``names``.

    ``args`` supplies ``train_way``, ``train_shot``, ``train_query``, ``freeze_layers``,
    ``meta_steps``, ``lr``, ``scale``, ``seed`` and ``data_dir``.  Classes are prefixed
    with their dataset's name, so equal names in two datasets stay distinct.
    """
    from metabook.bench.episodic import protonet_steps

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
    k = max(1, len(losses) // 10)
    return {"datasets": list(names), "classes": len(sampler.classes), "steps": args.meta_steps,
            "first_loss": sum(losses[:k]) / k if losses else None,
            "final_loss": sum(losses[-k:]) / k if losses else None, "seconds": time.perf_counter() - t}


def save_pretrained(encoder, out: str | os.PathLike, info: dict) -> Path:
    """Write ``<out>.safetensors`` and the sidecar ``<out>.json``; return the weights path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = out.with_suffix(".safetensors")
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, weights)
    side = {"format": _FORMAT, "weights": weights.name, "sha256": sha, **info}
    sidecar = out.with_suffix(".json")
    sidecar.with_name(sidecar.name + ".tmp").write_text(json.dumps(side, indent=2))
    os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
    return weights


def load_pretrained(encoder, path: str | os.PathLike, target: str | None = None) -> dict:
    """Load weights written by :func:`save_pretrained` into ``encoder``; return the sidecar.

    Checks the SHA-256 and the key set before touching the encoder, and raises
    :class:`PretrainLeakError` if the encoder was meta-trained on ``target``.
    """
    p = Path(path)
    sidecar = p.with_suffix(".json")
    if not sidecar.exists():
        raise FileNotFoundError(f"{sidecar}: no sidecar next to the pre-trained weights")
    side = json.loads(sidecar.read_text())
    if side.get("format") != _FORMAT:
        raise ValueError(f"{sidecar}: not a metabook pre-trained encoder (format {side.get('format')!r})")
    used = [str(d) for d in side.get("meta_pretrain", {}).get("datasets", [])]
    if target is not None and os.path.basename(str(target).rstrip("/")) in used:
        raise PretrainLeakError(f"{p} was meta-trained on {used}, which includes the target {target!r}")
    weights = sidecar.with_name(side["weights"])
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != side["sha256"]:
        raise ValueError(f"{weights}: SHA-256 does not match its sidecar (corrupt or replaced)")
    state = load_file(str(weights))
    own = encoder.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(f"{weights}: tensors do not match this encoder's state_dict")
    encoder.load_state_dict(state)
    return side


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="path stem (default $METABOOK_CACHE/pretrained/protonet_no-<exclude>)")
    p.add_argument("--record", default=None,
                   help="copy of the sidecar (no weights) for the results folder "
                        "(default benchmarks/results/pretrain_no-<exclude>.json)")
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    from metabook.bench.episodic import _hardware, _versions
    from metabook.encoders import MiniLMEncoder

    device = torch.device(args.device) if args.device else default_device()
    if args.meta_steps is None:
        args.meta_steps = by_device(400, 3000, device)
    if args.freeze_layers is None:
        args.freeze_layers = 0 if device.type != "cpu" else 2
    if args.meta_data is None:
        args.meta_data = [n for n in DATASETS if n != args.exclude]
    if args.exclude in args.meta_data:
        raise PretrainLeakError("--meta-data must not include the excluded target dataset")
    seed_everything(args.seed)
    encoder = MiniLMEncoder(device=device)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    info = meta_pretrain(encoder, args.meta_data, args, device, log)
    out = args.out or default_out(args.exclude)
    weights = save_pretrained(encoder.eval(), out, {
        "command": "python -m metabook.bench pretrain " + " ".join(sys.argv[2:]), "exclude": args.exclude,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "record")}, "meta_pretrain": info,
        "versions": _versions(), "hardware": _hardware(device)})
    record = Path(args.record or f"benchmarks/results/pretrain_no-{args.exclude}.json")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(weights.with_suffix(".json").read_text())
    print(f"wrote {weights} and {record}")
    return 0
