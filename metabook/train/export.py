"""The trained encoder as a Hugging Face folder, and the record of what it was trained on.

:func:`export_encoder` writes ``OUT/encoder/`` with ``save_pretrained`` (weights as
safetensors, config, tokenizer), so ``AutoModel.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load it, and beside them ``metabook.json``:
the data, split and classes training saw, the run's configuration, the git SHA
and the command.  :func:`check_unseen` refuses to evaluate such an encoder on
data it was trained on.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

from torch import nn

__all__ = ["export_encoder", "merged", "read_record", "check_unseen", "TrainedOnError", "git_sha", "RECORD"]

RECORD = "metabook.json"
_FORMAT = "metabook-encoder-v1"


class TrainedOnError(ValueError):
    """An encoder would be evaluated on data (classes) it was trained or selected on."""


def git_sha(root: str | os.PathLike | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when its code has uncommitted changes), or ``None``.

    Changes under ``benchmarks/results/`` are outputs, not code, and do not count: a queue of
    benchmark runs rewrites those files as it goes.
    """
    root = Path(root) if root else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def merged(encoder: nn.Module) -> nn.Module:
    """``encoder`` itself, or, when LoRA adapters were injected (``peft``), a copy with each
    adapter merged into its base layer, so it saves as a plain model."""
    import copy

    if not any(hasattr(m, "base_layer") and hasattr(m, "merge") for m in encoder.modules()):
        return encoder
    encoder = copy.deepcopy(encoder)
    for name, module in list(encoder.named_modules()):
        if hasattr(module, "base_layer") and hasattr(module, "merge"):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent) if parent else encoder, child, module.get_base_layer())
    return encoder


def export_encoder(out: str | os.PathLike, encoder: nn.Module, tokenizer: Any, record: dict) -> Path:
    """Write ``out`` as a Hugging Face model folder plus ``metabook.json``; returns ``out``.

    LoRA adapters are merged into their layers first (:func:`merged`).  The folder
    is built next to ``out`` and moved into place, so a crash leaves either the
    old folder or the new one, never a mix.
    """
    out = Path(out)
    encoder = merged(encoder)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    full = {"format": _FORMAT, "git_sha": git_sha(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            **record}
    (tmp / RECORD).write_text(json.dumps(full, indent=2))
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def read_record(folder: str | os.PathLike) -> dict | None:
    """The ``metabook.json`` of an exported encoder folder, or ``None`` for any other model."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a metabook encoder record (format {rec.get('format')!r})")
    return rec


def _seen(rec: dict) -> list[dict]:
    """Every intents source inside a (possibly mixture) record."""
    t = rec.get("trained_on", rec)
    if t.get("task") == "mixture":
        return _seen(t["first"]) + _seen(t["second"])
    if t.get("task") in ("datasets", "supervised"):  # every class of several datasets (cross-dataset training)
        return [{"data": d, "all": True} for d in t.get("datasets", [])]
    return [t] if t.get("task") == "intents" else []


def check_unseen(folder: str | os.PathLike, data: str | os.PathLike, classes: Iterable[str] | None = None) -> None:
    """Raise :class:`TrainedOnError` if the encoder in ``folder`` was trained or selected on
    ``data``'s ``classes`` (all of ``data`` when ``classes`` is ``None``).  Encoders without a
    record (plain Hugging Face models) pass."""
    rec = read_record(folder)
    if rec is None:
        return
    name = os.path.basename(str(data).rstrip("/")).lower()
    for seen in _seen(rec):
        if seen.get("data") != name:
            continue
        if seen.get("all"):
            raise TrainedOnError(f"{folder} was trained on every class of {name}; evaluate it on another dataset")
        used = set(seen.get("train_classes", [])) | set(seen.get("valid_classes", []))
        overlap = sorted(used if classes is None else used & set(classes))
        if overlap:
            raise TrainedOnError(f"{folder} was trained on {name} (split {seen.get('split')}), including "
                                 f"{len(overlap)} of the classes to evaluate (e.g. {overlap[0]!r}); "
                                 "evaluate on classes it has not seen")
