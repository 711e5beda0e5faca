"""Run configuration of ``python -m metabook.train``: a dataclass, YAML and command-line parsing,
and the factories that turn a configuration into a task source, a learner and its optimizer.

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

from metabook.algorithms import (ANIL, MAML, InContextLearner, Learner, Leopard, MaskedLMControl, MetaSGD, ProtoNet,
                                 Reptile, SimCSEControl)
from metabook.data.pooled import PooledIntents
from metabook.device import by_device
from metabook.models import sinusoid_mlp

__all__ = ["TrainConfig", "ALGORITHMS", "CONTROLS", "TASKS", "parse_args", "load_yaml", "build", "Built",
           "build_learner", "build_optimizer", "build_source", "supervised_pool"]

#: The learners ``--algorithm`` can name (the meta-learners, then the self-supervised controls).
ALGORITHMS = ("protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "icl", "leopard", "mlm", "simcse")
#: The non-meta self-supervised controls (continued masked-LM and SimCSE), which ignore labels.
CONTROLS = ("mlm", "simcse")
#: The task sources ``--task`` can name.
TASKS = ("sinusoid", "intents", "smlmt", "mixture", "text", "supervised", "custom")
#: Learners that build each task's classifier from its support classes (labels ``0..N-1``);
#: they cannot train a fixed head over global labels (``--task supervised``).
_PER_TASK_CLASSES = ("protonet", "icl", "leopard")
#: Config keys that define the model; resuming with different values is refused.
MODEL_KEYS = ("task", "algorithm", "hidden", "dtype", "encoder", "n_way", "adapt", "freeze_layers")

_HELP = {
    "algorithm": f"learner: {', '.join(ALGORITHMS)}; mlm (continued masked-LM) and simcse are "
                 "non-meta controls that ignore labels",
    "task": "task source: sinusoid, intents (--data/--split), smlmt (--corpus), mixture (intents + smlmt), "
            "text (--corpus: SMLMT's sentences unmasked, no labels; for mlm/simcse), supervised (labelled "
            "intents of several datasets, global labels; --data A,B or --exclude TARGET); "
            "custom: from Python, run(cfg, source=..., built=...)",
    "data": "intents: banking77 | clinc150 | hwu64 | a ProtAugment-layout folder; supervised: a comma-separated "
            "list of them (default: every registered dataset but --exclude)",
    "exclude": "supervised: the target dataset, never trained on",
    "overlap": "supervised: an overlap list for --exclude (python -m metabook.bench overlap --target T); "
               "its intents of the other datasets are removed first",
    "split": "intents: the class split (train classes train, valid classes select; test never seen)",
    "corpus": "smlmt/mixture/text: unlabeled UTF-8 text, one sentence a line (or banking77|clinc150|hwu64|wiki)",
    "stream": "smlmt/mixture/text: stream --corpus in buffers of --buffer-size lines, each rank reading only its "
              "lines (line i: rank i mod world size); automatic for files over 256 MiB",
    "buffer_size": "with --stream: sentences held in memory at once (the SMLMT word index is built over them)",
    "mixture_p": "mixture: probability that a task is an intents task (else SMLMT)",
    "encoder": "text tasks: minilm | tiny (random small BERT) | a local Hugging Face folder | a hub id",
    "n_way": "text tasks: classes per episode",
    "adapt": "MAML family and leopard on text: what the inner loop adapts: all | head | topK (top K layers + "
             "head) | lora (not leopard); leopard's head is its generated softmax",
    "freeze_layers": "text tasks: embeddings + bottom N layers get no outer update (0 = none)",
    "max_length": "text tasks: tokens per sentence (longer ones are truncated)",
    "scale": "text tasks: cosine logit scale (ProtoNet) / embedding scale before the head",
    "task_chunk": "tasks per chunk in the backward pass (same gradients, less memory); none = all",
    "val_every": "validate on the split's valid classes every N steps (0 = never); the best checkpoint is kept",
    "val_episodes": "validation episodes", "val_shot": "K of the validation episodes (default: --k-shot)", "patience": "stop after N validations without improvement (0 = never)",
    "steps": "total outer steps (a resumed run continues up to this number)",
    "meta_batch": "GLOBAL meta-batch: tasks per step summed over all ranks",
    "k_shot": "support points per task", "n_query": "query points per task",
    "inner_lr": "inner-loop step size (alpha; the initial value of Meta-SGD's and LEOPARD's learned rates; "
                "default 0.01, 0.5 on text)",
    "inner_steps": "inner-loop gradient steps (0 with maml on --task supervised: supervised multi-task "
                   "training)",
    "meta_lr": "outer learning rate (default 1e-3 for adam, 3e-5 for adamw; 0.1 = Reptile's epsilon for sgd)",
    "optimizer": "outer optimizer: adam, adamw or sgd (default adam; adamw on text; sgd for reptile)",
    "hidden": "hidden width of the 1-h-h-1 MLP", "dtype": "parameter dtype: float32 or float64",
    "precision": "auto (bf16 autocast on CUDA with float32, else off), fp32 (off) or bf16 (force)",
    "device": "auto, cpu, cuda, ... (under torchrun: cuda:LOCAL_RANK when CUDA is available)",
    "seed": "seed of the task stream and the initialization",
    "out": "output directory (default runs/<task>-<algorithm>); the trained encoder goes to OUT/encoder",
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
    data: str | None = None
    split: str = "01"
    exclude: str | None = None
    overlap: str | None = None
    corpus: str | None = None
    stream: bool = False
    buffer_size: int = 20_000
    mixture_p: float = 0.5
    encoder: str = "minilm"
    n_way: int = 5
    adapt: str = "top2"
    freeze_layers: int = 0
    max_length: int = 32
    scale: float = 20.0
    steps: int = 1000
    meta_batch: int | None = None
    k_shot: int | None = None
    n_query: int | None = None
    inner_lr: float | None = None
    inner_steps: int = 1
    meta_lr: float | None = None
    optimizer: str | None = None
    hidden: int = 40
    dtype: str = "float32"
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    out: str | None = None
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
    task_chunk: int | None = None
    val_every: int = 0
    val_episodes: int = 100
    val_shot: int | None = None
    patience: int = 0

    @property
    def text(self) -> bool:
        """Whether the task is a text task (tokenized episodes through an encoder)."""
        return self.task not in ("sinusoid", "custom")

    def resolved(self) -> "TrainConfig":
        """Fill the task- and algorithm-dependent defaults and validate.

        Sinusoid: meta-batch 25, K = Q = 10, inner lr 0.01, Adam 1e-3.  Text:
        meta-batch 4 on a CPU (16 on a GPU), K = 2 (5), Q = 3 (5), inner lr 0.5,
        AdamW 3e-5.  Reptile: SGD with lr 0.1 (epsilon).
        """
        sin = not self.text
        pick = lambda v, a, b: v if v is not None else (a if sin else b)  # noqa: E731
        opt = self.optimizer or ("sgd" if self.algorithm == "reptile" else ("adam" if sin else "adamw"))
        lr = self.meta_lr if self.meta_lr is not None else {"sgd": 0.1, "adam": 1e-3, "adamw": 3e-5}[opt]
        cfg = dataclasses.replace(
            self, optimizer=opt, meta_lr=float(lr),
            meta_batch=pick(self.meta_batch, 25, by_device(4, 16, self._device())),
            k_shot=pick(self.k_shot, 10, by_device(2, 5, self._device())),
            n_query=pick(self.n_query, 10, by_device(3, 5, self._device())),
            inner_lr=float(pick(self.inner_lr, 0.01, 0.5)),
            out=self.out or f"runs/{self.task}-{self.algorithm}")
        cfg.validate()
        return cfg

    def _device(self) -> torch.device:
        from metabook.device import default_device
        return default_device() if self.device == "auto" else torch.device(self.device)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        choices = {"algorithm": ALGORITHMS, "task": TASKS, "dtype": ("float32", "float64"),
                   "precision": ("auto", "fp32", "bf16"), "on_nonfinite": ("raise", "skip"),
                   "optimizer": ("adam", "adamw", "sgd", None)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {[a for a in allowed if a]}, got {getattr(self, name)!r}")
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "inner_steps", "freeze_layers",
                     "val_every", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("meta_batch", "k_shot", "n_query", "hidden", "log_every", "max_skips", "n_way",
                     "max_length", "val_episodes", "task_chunk", "val_shot", "buffer_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.adapt in ("all", "head", "lora") or (self.adapt.startswith("top") and self.adapt[3:].isdigit())):
            raise ValueError(f"adapt must be all, head, lora or topK (e.g. top2), got {self.adapt!r}")
        if self.task == "sinusoid" and self.algorithm in ("protonet", "icl", "leopard"):
            raise ValueError(f"--algorithm {self.algorithm} classifies; the sinusoid task is regression "
                             "(use --task intents, smlmt or mixture)")
        if self.task == "sinusoid" and self.algorithm in CONTROLS:
            raise ValueError(f"--algorithm {self.algorithm} trains a text encoder on sentences; the sinusoid task "
                             "has none (use --task text, smlmt, intents, mixture or supervised)")
        if self.task == "text" and self.algorithm not in CONTROLS:
            raise ValueError(f"--task text has no labels: it is for the self-supervised controls "
                             f"(--algorithm {' or '.join(CONTROLS)}), not {self.algorithm}")
        if self.task == "supervised" and self.algorithm in _PER_TASK_CLASSES:
            raise ValueError(f"--task supervised has global labels (one head over all intents), but "
                             f"--algorithm {self.algorithm} builds each task's classifier from its support classes; "
                             "use maml --inner-steps 0 (supervised multi-task training), fomaml, anil, metasgd, "
                             "reptile, mlm or simcse")
        if (self.exclude or self.overlap) and self.task != "supervised":
            raise ValueError("--exclude and --overlap are options of --task supervised")
        if self.overlap and not self.exclude:
            raise ValueError("--overlap is the overlap list of a target dataset: give --exclude TARGET as well")
        if self.task == "supervised" and not (self.data or self.exclude):
            raise ValueError("--task supervised needs --data (comma-separated datasets) or --exclude TARGET "
                             "(every other registered dataset)")
        if self.algorithm == "leopard" and self.adapt == "lora":
            raise ValueError("--algorithm leopard adapts the top layers (--adapt all, head or topK), not lora")
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
    if name == "split" and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:02d}"  # YAML reads `split: 01` as the integer 1
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    kind = {"meta_lr": float, "clip_grad": float, "threads": int, "optimizer": str, "backend": str,
            "data": str, "exclude": str, "overlap": str, "corpus": str, "out": str, "meta_batch": int,
            "k_shot": int, "n_query": int, "inner_lr": float, "task_chunk": int,
            "val_shot": int}.get(name, type(default))
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
        description="Meta-train any learner on any task source (sinusoid regression, intent episodes, "
                    "SMLMT from unlabeled text, or a mixture); the same command runs under torchrun "
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


@dataclass
class Built:
    """What :func:`build` makes: the learner, and for text tasks the encoder and its tokenizer."""

    learner: Learner
    encoder: nn.Module | None = None
    tokenizer: Any = None
    encoder_info: dict | None = None


def _sinusoid_learner(cfg: TrainConfig) -> Learner:
    model = sinusoid_mlp(cfg.hidden).to(getattr(torch, cfg.dtype))
    kw = dict(inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, loss_fn=F.mse_loss, task_chunk=cfg.task_chunk)
    if cfg.algorithm in ("maml", "fomaml"):
        return MAML(model, first_order=cfg.algorithm == "fomaml", **kw)
    if cfg.algorithm == "anil":
        return ANIL(model, **kw)
    if cfg.algorithm == "metasgd":
        return MetaSGD(model, **kw)
    # Reptile's own outer_lr is unused here: the outer optimizer applies the update.
    return Reptile(model, outer_lr=1.0, **kw)


def _adapt_lora(bert: nn.Module) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("--adapt lora needs peft: pip install peft") from None
    inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]), bert)


def _control(cfg: TrainConfig, bert: nn.Module, tokenizer: Any) -> Learner:
    """The self-supervised control of ``cfg.algorithm`` (``mlm`` or ``simcse``) on ``bert``."""
    from metabook.bert import SentenceEncoder

    if cfg.algorithm == "simcse":
        return SimCSEControl(SentenceEncoder(bert), scale=cfg.scale, task_chunk=cfg.task_chunk)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise ValueError(f"--algorithm mlm needs a tokenizer with a mask token; {cfg.encoder!r}'s has none")
    return MaskedLMControl(bert, mask_id, tokenizer.all_special_ids, scale=cfg.scale, task_chunk=cfg.task_chunk)


def _text_learner(cfg: TrainConfig, bert: nn.Module, tokenizer: Any = None, n_out: int | None = None) -> Learner:
    """The learner of ``cfg`` on ``bert``; ``n_out`` is the width of a classification head
    (default ``cfg.n_way``; on ``--task supervised`` the number of global classes)."""
    from metabook.bert import SentenceEncoder, TextClassifier, split_top

    n_layers = len(bert.encoder.layer)
    if cfg.freeze_layers > n_layers:
        raise ValueError(f"freeze_layers={cfg.freeze_layers} but the encoder has {n_layers} layers")
    chunk = cfg.task_chunk
    n_out = cfg.n_way if n_out is None else int(n_out)
    if cfg.algorithm in CONTROLS:
        return _control(cfg, bert, tokenizer)
    if cfg.algorithm == "protonet":
        return ProtoNet(SentenceEncoder(bert), distance="cosine", scale=cfg.scale, task_chunk=chunk)
    if cfg.algorithm == "icl":
        return InContextLearner(bert.config.hidden_size, max_way=cfg.n_way, encoder=SentenceEncoder(bert),
                                task_chunk=chunk)
    kw = dict(inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps, task_chunk=chunk)
    if cfg.algorithm == "leopard":  # the top layers adapt; split_top's linear head is replaced by a generated one
        top = 0 if cfg.adapt == "head" else (None if cfg.adapt == "all" else int(cfg.adapt[3:]))
        body, model = split_top(bert, cfg.n_way, top, scale=cfg.scale)
        d = bert.config.hidden_size
        generator = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d + 1))
        nn.init.zeros_(generator[2].weight)  # starts at a zero softmax, like the other learners' zero head
        nn.init.zeros_(generator[2].bias)
        return Leopard(model.encoder, d, generator=generator, body=body, **kw)
    if cfg.algorithm == "reptile":
        return Reptile(TextClassifier(bert, n_out, scale=cfg.scale), outer_lr=1.0, **kw)
    first_order = cfg.algorithm == "fomaml"
    cls = MetaSGD if cfg.algorithm == "metasgd" else MAML
    if cfg.adapt == "head" or cfg.algorithm == "anil":  # ANIL: the body runs once per task
        head = nn.Sequential()
        head.add_module("head", nn.Linear(bert.config.hidden_size, n_out))
        nn.init.zeros_(head.head.weight)
        nn.init.zeros_(head.head.bias)
        body = SentenceEncoder(bert, scale=cfg.scale)
        if cfg.algorithm == "anil":
            return ANIL(head, head="head", body=body, first_order=first_order, **kw)
        return cls(head, body=body, first_order=first_order, **kw)
    if cfg.adapt == "lora":
        _adapt_lora(bert)
        model = TextClassifier(bert, n_out, scale=cfg.scale)
        return cls(model, adapt=lambda n: "lora_" in n or n.startswith("head."), first_order=first_order, **kw)
    top = None if cfg.adapt == "all" else int(cfg.adapt[3:])
    body, model = split_top(bert, n_out, top, scale=cfg.scale)
    return cls(model, body=body, first_order=first_order, **kw)


def build(cfg: TrainConfig) -> Built:
    """The learner of ``cfg`` (uses the global torch RNG for new weights); text tasks load
    ``cfg.encoder`` first (:func:`metabook.bert.load_encoder`)."""
    if cfg.task == "custom":
        raise ValueError("task 'custom' takes its learner from Python: run(cfg, source=..., built=Built(...))")
    if not cfg.text:
        return Built(_sinusoid_learner(cfg))
    from metabook.bert import load_encoder

    bert, tokenizer, info = load_encoder(cfg.encoder)
    bert = bert.to(getattr(torch, cfg.dtype))
    n_out = None
    if cfg.task == "supervised" and cfg.algorithm not in CONTROLS:  # one head over every global class
        n_out = supervised_pool(cfg).num_classes
    learner = _text_learner(cfg, bert, tokenizer, n_out).to(getattr(torch, cfg.dtype))
    if cfg.freeze_layers:
        for module in [bert.embeddings, *bert.encoder.layer[:cfg.freeze_layers]]:
            for p in module.parameters():
                p.requires_grad_(False)
    return Built(learner, bert, tokenizer, info)


def build_learner(cfg: TrainConfig) -> Learner:
    """The learner of ``cfg`` alone (see :func:`build`)."""
    return build(cfg).learner


def build_source(cfg: TrainConfig, rank: int | None = None, world_size: int | None = None):
    """The task source of ``cfg`` (:mod:`metabook.train.sources`); validates ``--data``,
    ``--split`` and ``--corpus`` and raises ``ValueError`` with one line.

    ``rank``/``world_size`` (default: the active process group's, else 0 and 1) pick the
    corpus shard of a streamed SMLMT source (``--stream``, or a file over
    :data:`~metabook.train.sources.STREAM_BYTES`; ``--task text`` reads its corpus the same
    way); the other sources ignore them."""
    from metabook.data.intents import load_unlabeled
    from metabook.train import sources

    cfg = cfg.resolved()
    if cfg.task == "custom":
        raise ValueError("task 'custom' takes its task source from Python: run(cfg, source=..., built=...)")
    if not cfg.text:
        return sources.SinusoidSource(cfg.k_shot, cfg.n_query, cfg.seed, getattr(torch, cfg.dtype),
                                      valid_tasks=cfg.val_episodes if cfg.val_every else 0)
    if cfg.task in ("intents", "mixture") and not cfg.data:
        raise ValueError(f"--task {cfg.task} needs --data (banking77, clinc150, hwu64 or a folder)")
    if cfg.task in ("smlmt", "mixture", "text") and not cfg.corpus:
        raise ValueError(f"--task {cfg.task} needs --corpus (a text file, one sentence a line)")
    if cfg.task == "supervised":
        return sources.SupervisedSource(supervised_pool(cfg), cfg.k_shot, cfg.n_query, cfg.seed)
    intents = smlmt = None
    if cfg.task in ("intents", "mixture"):
        intents = sources.IntentSource(cfg.data, cfg.split, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.seed,
                                       cfg.val_episodes, valid_shot=cfg.val_shot)
    if cfg.task in ("smlmt", "mixture", "text"):
        path = cfg.corpus
        is_file = os.path.exists(path) or os.sep in path
        if cfg.stream or (os.path.isfile(path) and os.path.getsize(path) > sources.STREAM_BYTES):
            if rank is None or world_size is None:
                import torch.distributed as dist
                on = dist.is_available() and dist.is_initialized()
                rank, world_size = (dist.get_rank(), dist.get_world_size()) if on else (0, 1)
            smlmt = sources.StreamingSMLMTSource(path if is_file else load_unlabeled(path), cfg.n_way, cfg.k_shot,
                                                 cfg.n_query, cfg.seed, rank=rank, world_size=world_size,
                                                 buffer_size=cfg.buffer_size, name=None if is_file else path)
        else:
            text = sources.read_corpus(path) if is_file else load_unlabeled(path)
            smlmt = sources.SMLMTSource(text, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.seed, corpus=path)
    if cfg.task == "mixture":
        return sources.MixtureSource(intents, smlmt, cfg.mixture_p, cfg.seed)
    if cfg.task == "text":  # the SMLMT episodes' sentences, unmasked, for the controls
        return sources.TextSource(smlmt)
    return intents or smlmt


def supervised_pool(cfg: TrainConfig) -> PooledIntents:
    """The labelled datasets of ``--task supervised``, pooled into one label space
    (:func:`~metabook.data.pooled.pool_intents`): ``--data`` (comma-separated), else every
    registered dataset but ``--exclude``, less the intents of the ``--overlap`` list.
    Raises ``ValueError`` with one line."""
    from metabook.data.intents import DATASETS
    from metabook.data.pooled import pool_intents, read_overlap_list

    target = cfg.exclude.lower() if cfg.exclude else None
    if cfg.data:
        names = [n.strip() for n in cfg.data.split(",") if n.strip()]
    elif target in DATASETS:
        names = [n for n in DATASETS if n != target]
    else:
        raise ValueError(f"--exclude {cfg.exclude!r} is not one of {sorted(DATASETS)}; name the datasets "
                         "to train on with --data")
    if target and target in [os.path.basename(n.rstrip("/")).lower() for n in names]:
        raise ValueError(f"--data must not include the excluded target {cfg.exclude!r}")
    remove = read_overlap_list(cfg.overlap, target) if cfg.overlap else None
    return pool_intents(names, remove)


def build_optimizer(cfg: TrainConfig, learner: nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW (weight decay 0.01) or SGD over the learner's trainable parameters
    (model and e.g. Meta-SGD rates)."""
    cfg = cfg.resolved() if cfg.optimizer is None or cfg.meta_lr is None else cfg
    params = [p for p in learner.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.meta_lr, weight_decay=0.01)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    return cls(params, lr=cfg.meta_lr)
