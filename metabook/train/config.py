"""Run configuration of ``python -m metabook.train``: a dataclass, YAML and command-line parsing,
and the factory that turns a configuration into a learner and its optimizer.

Precedence: dataclass defaults < ``--config run.yaml`` < command-line arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metabook.algorithms import ANIL, MAML, MetaSGD, Reptile
from metabook.models import sinusoid_mlp

__all__ = ["TrainConfig", "ALGORITHMS", "parse_args", "load_yaml", "build_learner", "build_optimizer"]

ALGORITHMS = ("maml", "fomaml", "anil", "metasgd", "reptile")
#: Config keys that define the model; resuming with different values is refused.
MODEL_KEYS = ("task", "algorithm", "hidden", "dtype")

_HELP = {
    "algorithm": f"meta-learner: {', '.join(ALGORITHMS)}",
    "task": "task family (only 'sinusoid' for now)",
    "steps": "total outer steps (a resumed run continues up to this number)",
    "meta_batch": "GLOBAL meta-batch: tasks per step summed over all ranks",
    "k_shot": "support points per task", "n_query": "query points per task",
    "inner_lr": "inner-loop step size (alpha; Meta-SGD's initial value)",
    "inner_steps": "inner-loop gradient steps",
    "meta_lr": "outer learning rate (default 1e-3 for adam; 0.1 = Reptile's epsilon for sgd)",
    "optimizer": "outer optimizer: adam or sgd (default adam; sgd for reptile)",
    "hidden": "hidden width of the 1-h-h-1 MLP", "dtype": "parameter dtype: float32 or float64",
    "precision": "auto (bf16 autocast on CUDA with float32, else off), fp32 (off) or bf16 (force)",
    "device": "auto, cpu, cuda, ... (under torchrun: cuda:LOCAL_RANK when CUDA is available)",
    "seed": "seed of the task stream and the initialization", "out": "output directory",
    "checkpoint_every": "write a checkpoint every N steps (and always at the end); 0 = only at the end",
    "keep_checkpoints": "keep the newest N checkpoints (0 = all)",
    "log_every": "write a metrics line every N steps",
    "resume": "continue from the latest checkpoint in OUT/checkpoints",
    "overwrite": "delete existing checkpoints and metrics in OUT first",
    "on_nonfinite": "raise: stop with an error naming the step and task; skip: skip the step",
    "max_skips": "with --on-nonfinite skip: stop after this many consecutive skipped steps",
    "clip_grad": "clip the meta-gradient to this global norm",
    "progress": "tqdm progress bar on rank 0", "tensorboard": "also log to TensorBoard if installed",
    "threads": "torch CPU threads per process", "backend": "torch.distributed backend (default: nccl "
    "on GPU, gloo on CPU; env METABOOK_DIST_BACKEND)",
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (see ``python -m metabook.train --help``)."""

    algorithm: str = "maml"
    task: str = "sinusoid"
    steps: int = 1000
    meta_batch: int = 25
    k_shot: int = 10
    n_query: int = 10
    inner_lr: float = 0.01
    inner_steps: int = 1
    meta_lr: float | None = None
    optimizer: str | None = None
    hidden: int = 40
    dtype: str = "float32"
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    out: str = "runs/sinusoid"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 1
    resume: bool = False
    overwrite: bool = False
    on_nonfinite: str = "raise"
    max_skips: int = 10
    clip_grad: float | None = None
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None
    backend: str | None = None

    def resolved(self) -> "TrainConfig":
        """Fill the algorithm-dependent defaults (optimizer, meta_lr) and validate."""
        opt = self.optimizer or ("sgd" if self.algorithm == "reptile" else "adam")
        lr = self.meta_lr if self.meta_lr is not None else (0.1 if opt == "sgd" else 1e-3)
        cfg = dataclasses.replace(self, optimizer=opt, meta_lr=float(lr))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        choices = {"algorithm": ALGORITHMS, "task": ("sinusoid",), "dtype": ("float32", "float64"),
                   "precision": ("auto", "fp32", "bf16"), "on_nonfinite": ("raise", "skip"),
                   "optimizer": ("adam", "sgd", None)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {[a for a in allowed if a]}, got {getattr(self, name)!r}")
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "inner_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("meta_batch", "k_shot", "n_query", "hidden", "log_every", "max_skips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.algorithm == "reptile" and self.inner_steps < 1:
            raise ValueError("reptile needs inner_steps >= 1")
        if self.precision == "bf16" and self.dtype == "float64":
            raise ValueError("precision bf16 needs dtype float32")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    def model_config(self) -> dict:
        """The fields that define the model (checked when resuming)."""
        return {k: getattr(self, k) for k in MODEL_KEYS}

    def to_dict(self) -> dict:
        """A JSON-able copy."""
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any) -> Any:
    """Convert a YAML/CLI value to the type of field ``name``."""
    default = TrainConfig.__dataclass_fields__[name].default
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    kind = {"meta_lr": float, "clip_grad": float, "threads": int, "optimizer": str, "backend": str}.get(
        name, type(default))
    if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}") from None


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a run configuration from YAML (keys as in :class:`TrainConfig`; dashes allowed)."""
    try:
        import yaml
    except ImportError:
        raise ImportError("--config needs PyYAML: pip install pyyaml") from None
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(raw).__name__}")
    names = {f.name for f in fields(TrainConfig)}
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ValueError(f"{path}: unknown option {key!r}; known: {sorted(names)}")
        out[name] = _coerce(name, value)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m metabook.train",
        description="Meta-train on the sinusoid family; the same command runs under torchrun "
                    "(data parallel over the task batch).",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML file of options; command-line arguments override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{_HELP.get(f.name, '')} (default: {f.default})"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, type=lambda v, n=f.name: _coerce(n, v), help=help_, metavar=f.name.upper())
    return p


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from ``--config`` YAML and command-line arguments."""
    ns = vars(_parser().parse_args(argv))
    values = load_yaml(ns.pop("config")) if "config" in ns else {}
    values.update(ns)
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def build_learner(cfg: TrainConfig) -> nn.Module:
    """The learner of ``cfg`` around a fresh sinusoid MLP (uses the global torch RNG)."""
    model = sinusoid_mlp(cfg.hidden).to(getattr(torch, cfg.dtype))
    kw = dict(inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, loss_fn=F.mse_loss)
    if cfg.algorithm in ("maml", "fomaml"):
        return MAML(model, first_order=cfg.algorithm == "fomaml", **kw)
    if cfg.algorithm == "anil":
        return ANIL(model, **kw)
    if cfg.algorithm == "metasgd":
        return MetaSGD(model, **kw)
    # Reptile's own outer_lr is unused here: the outer optimizer applies the update.
    return Reptile(model, outer_lr=1.0, **kw)


def build_optimizer(cfg: TrainConfig, learner: nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD over all of the learner's parameters (model and e.g. Meta-SGD rates)."""
    cfg = cfg.resolved() if cfg.optimizer is None or cfg.meta_lr is None else cfg
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    return cls(learner.parameters(), lr=cfg.meta_lr)
