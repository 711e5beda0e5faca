"""Meta-training and evaluation loops shared by the book, the benchmarks and users.

``meta_train`` runs any learner whose loss is a function of a meta-batch;
``evaluate`` scores a predictor on episodes and reports the mean accuracy with
a 95% confidence interval, the way few-shot papers report it.  ``meta_step``
is one guarded, data-parallel outer step, and ``run`` is the driver behind
``python -m metabook.train`` (checkpoints, resume, metrics, ``torchrun``).

Non-finite losses are never skipped silently: they raise
:class:`NonFiniteLossError` naming the step and the task, or, with
``on_nonfinite="skip"``, the step is skipped, counted and logged, and training
stops at the ``max_skips``-th consecutive skipped step.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from metabook.algorithms import Learner
from metabook.algorithms.base import take_tasks
from metabook.device import seed_everything
from metabook.tasks import Episode, stack_episodes
from metabook.train.checkpoint import (CheckpointError, _atomic_write, capture_rng, latest_checkpoint,
                                       list_checkpoints, load_checkpoint, rng_from_bytes, rng_to_bytes,
                                       save_checkpoint)
from metabook.train.config import Built, TrainConfig, build, build_optimizer, build_source
from metabook.train.export import export_encoder
from metabook.train.distributed import (DistContext, all_reduce_grads, all_reduce_sum, barrier,
                                        broadcast_module, cleanup, gather_bytes, init_distributed,
                                        rank_seed, shard)

__all__ = ["mean_ci", "evaluate", "meta_train", "TrainLog", "NonFiniteLossError", "task_losses",
           "meta_step", "StepResult", "run", "RunResult"]


class NonFiniteLossError(FloatingPointError):
    """The meta-loss became NaN or inf; raised with the step (and task) at which it happened.

    ``step`` is the 0-based outer step; ``tasks`` the indices, within the (global)
    meta-batch, of the tasks whose loss was not finite.
    """

    def __init__(self, message: str, step: int | None = None, tasks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.step, self.tasks = step, list(tasks)


def _nonfinite_message(step: int, losses: torch.Tensor, info: Sequence | None = None) -> tuple[str, list[int]]:
    """Describe which tasks of a meta-batch have a NaN/inf loss."""
    losses = losses.detach()
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    parts = []
    for i in bad[:5]:
        desc = f"task {i} (loss={float(losses[i])}"
        if info is not None and i < len(info):
            desc += f", task={info[i]!r}"
        parts.append(desc + ")")
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (f"meta-loss is not finite at step {step}: {', '.join(parts)}{more}; {len(bad)} of "
            f"{losses.numel()} tasks of the meta-batch. Lower the learning rates, clip gradients "
            "(clip_grad), check the data, or skip such steps (on_nonfinite='skip')"), bad


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation confidence interval.

    ``1.96 * std / sqrt(n)`` for 95%, with the sample standard deviation (ddof=1),
    as in Snell et al. and the ProtAugment protocol.  One value gives a 0 interval.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if v.size == 1:
        return float(v[0]), 0.0
    z = math.sqrt(2) * _erfinv(confidence)
    return float(v.mean()), float(z * v.std(ddof=1) / math.sqrt(v.size))


def _erfinv(y: float) -> float:
    return float(torch.erfinv(torch.tensor(y, dtype=torch.float64)))


@torch.no_grad()
def evaluate(predict: Callable[..., torch.Tensor], episodes: Iterable[Episode],
             device: torch.device | str | None = None, progress: bool = False,
             collate: Callable[[Episode], Episode] | None = None) -> dict:
    """Accuracy of ``predict(support_x, support_y, query_x) -> labels`` over episodes.

    Returns ``{"mean": ..., "ci95": ..., "n": ..., "accuracies": [...]}`` with
    accuracies in percent.  Batched episodes count each task separately; an
    unbatched episode is given a task dimension of 1 before ``predict`` sees it.
    ``collate`` (e.g. a :class:`~metabook.TextCollator`) turns text episodes into
    tensors first.  Predictions whose shape differs from the labels' raise.
    """
    accs: list[float] = []
    for ep in tqdm(episodes, disable=not progress, desc="evaluate", leave=False):
        if not ep.batched:
            ep = stack_episodes([ep])
        if collate is not None:
            ep = collate(ep)
        if device is not None:
            ep = ep.to(device)
        pred = predict(ep.support_x, ep.support_y, ep.query_x)
        if not isinstance(pred, torch.Tensor) or pred.shape != ep.query_y.shape:
            got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            raise ValueError(f"predict returned {got} but query_y has shape {tuple(ep.query_y.shape)}: "
                             "it must return one label per query (logits? take .argmax(-1))")
        correct = (pred == ep.query_y).float().cpu().double()
        accs.extend((100 * correct.mean(-1)).tolist())
    mean, ci = mean_ci(accs)
    return {"mean": mean, "ci95": ci, "n": len(accs), "accuracies": accs}


@dataclass
class TrainLog:
    """Per-step meta-losses and wall time of a run (``skipped``: steps skipped as non-finite)."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    evals: list[tuple[int, float]] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _grad_norm(params: Sequence[torch.Tensor], clip: float | None) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    if not grads:
        return torch.zeros(())
    # float32 on the device (MPS has no float64)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def _skip_or_raise(policy: str, message: str, step: int, tasks: Sequence[int], consecutive: int,
                   max_skips: int) -> None:
    """Raise for ``policy == 'raise'``, or when ``consecutive`` skips reach ``max_skips``."""
    if policy == "raise":
        raise NonFiniteLossError(message, step, tasks)
    if policy != "skip":
        raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {policy!r}")
    if consecutive >= max_skips:
        raise NonFiniteLossError(f"{consecutive} consecutive steps skipped (max_skips={max_skips}); "
                                 f"stopping. Last: {message}", step, tasks)


def meta_train(loss_fn: Learner | Callable[[Episode], torch.Tensor], batches: Iterator[Episode],
               optimizer: torch.optim.Optimizer, steps: int, *,
               device: torch.device | str | None = None, clip_grad: float | None = None,
               eval_fn: Callable[[], float] | None = None, eval_every: int = 0,
               progress: bool = True, on_nonfinite: str = "raise", max_skips: int = 10,
               collate: Callable[[Episode], Episode] | None = None) -> TrainLog:
    """The in-process outer loop: ``steps`` optimizer steps on meta-batches from ``batches``.

    The first argument is any :class:`~metabook.Learner` (its ``outer_backward``
    gives the update, chunked by its ``task_chunk``), or a function that maps a
    (stacked) episode to a scalar meta-loss, e.g. ``lambda ep: maml.meta_loss(*ep.tensors())``,
    or to the 1-D tensor of per-task losses, which is averaged and lets a
    non-finite loss be traced to its task.  ``collate`` (e.g. a
    :class:`~metabook.TextCollator`) tokenizes text episodes.  For data-parallel
    runs, checkpoints, resume and validation use :func:`run`.  A NaN/inf loss
    or gradient raises :class:`NonFiniteLossError` naming the step; with
    ``on_nonfinite="skip"`` the step is skipped (recorded in ``TrainLog.skipped``)
    and training stops at the ``max_skips``-th consecutive skip.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    log, start, consecutive = TrainLog(), time.perf_counter(), 0
    params = [p for g in optimizer.param_groups for p in g["params"]]
    bar = tqdm(range(steps), disable=not progress, desc="meta-train", leave=False)
    for step in bar:
        ep = next(batches)
        if collate is not None:
            ep = collate(ep)
        if device is not None:
            ep = ep.to(device)
        optimizer.zero_grad(set_to_none=True)
        if isinstance(loss_fn, Learner):  # backward happens inside, task_chunk tasks at a time
            loss = per_task = loss_fn.outer_backward(*ep.tensors(), scale=1.0 / int(ep.support_y.shape[0]))
        else:
            loss = loss_fn(ep)
            per_task = loss if loss.dim() == 1 else loss.reshape(1)
        problem: tuple[str, list[int]] | None = None
        if not bool(torch.isfinite(per_task).all()):
            problem = _nonfinite_message(step, per_task, ep.classes if loss.dim() == 1 else None)
            if loss.dim() == 0:
                problem = (f"meta-loss is {loss.item()} at step {step}; lower the learning rates, "
                           "or clip gradients (clip_grad=...)", [])
        else:
            if not isinstance(loss_fn, Learner):
                per_task.mean().backward()
            norm = _grad_norm(params, clip_grad)
            if not bool(torch.isfinite(norm)):
                problem = (f"meta-gradient is not finite at step {step} although the loss is", [])
        if problem is not None:
            consecutive += 1
            optimizer.zero_grad(set_to_none=True)
            _skip_or_raise(on_nonfinite, problem[0], step, problem[1], consecutive, max_skips)
            log.skipped.append(step)
            continue
        consecutive = 0
        optimizer.step()
        log.losses.append(per_task.mean().item())
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0:
            log.evals.append((step + 1, float(eval_fn())))
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
    log.seconds = time.perf_counter() - start
    return log


# -- one guarded, data-parallel outer step ----------------------------------------------------
def task_losses(learner: Learner, support_x, support_y: torch.Tensor, query_x,
                query_y: torch.Tensor) -> torch.Tensor:
    """Per-task outer objectives ``(B,)``: ``learner.task_losses(...)`` (kept for older code)."""
    return learner.task_losses(support_x, support_y, query_x, query_y)


@dataclass
class StepResult:
    """Outcome of :func:`meta_step`: mean loss and per-task losses of the global meta-batch."""

    loss: float
    task_losses: torch.Tensor
    grad_norm: float
    skipped: bool = False
    reason: str = ""


def meta_step(learner: Learner, optimizer: torch.optim.Optimizer, episode: Episode, *, step: int,
              global_batch: int | None = None, task_offset: int = 0, ctx: DistContext | None = None,
              autocast: Callable[[], ContextManager] | None = None, clip_grad: float | None = None,
              on_nonfinite: str = "raise", task_info: Sequence | None = None) -> StepResult:
    """One outer step on this rank's slice of a global meta-batch, for any :class:`~metabook.Learner`.

    ``episode`` holds this rank's tasks, which are tasks ``task_offset ..`` of a
    global meta-batch of ``global_batch`` tasks (default: all of them, single
    process).  Each rank calls ``learner.outer_backward(..., scale=1/global_batch)``;
    gradients are summed over ranks, so the update equals that of one process on
    the whole batch.  Per-task losses are all-reduced first, so every rank takes
    the same decision on a non-finite loss: raise :class:`NonFiniteLossError`
    (``on_nonfinite="raise"``) or return a skipped result without updating
    (``"skip"``; the caller counts skips).
    """
    ctx = ctx or DistContext()
    sy = episode.support_y
    n_local = int(sy.shape[0])
    total = n_local if global_batch is None else int(global_batch)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    amp = autocast() if autocast is not None else nullcontext()
    with amp:
        if n_local == 0:
            losses = torch.zeros(0, device=sy.device)
        else:
            losses = learner.outer_backward(*episode.tensors(), scale=1.0 / total)
    # float64 only when the model already is (MPS has none): the model's dtype, at least float32
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    full = torch.zeros(total, dtype=dtype, device=sy.device)
    full[task_offset:task_offset + n_local] = losses.detach().to(dtype)
    all_reduce_sum(full, ctx)  # every rank now sees every task's loss
    full = full.cpu().double()
    if not bool(torch.isfinite(full).all()):
        optimizer.zero_grad(set_to_none=True)
        msg, bad = _nonfinite_message(step, full, task_info)
        if on_nonfinite == "raise":
            raise NonFiniteLossError(msg, step, bad)
        return StepResult(math.nan, full, math.nan, skipped=True, reason=msg)
    all_reduce_grads(params, ctx)
    norm = _grad_norm(params, clip_grad)
    if not bool(torch.isfinite(norm)):
        msg = f"meta-gradient is not finite at step {step} although every task loss is finite"
        optimizer.zero_grad(set_to_none=True)
        if on_nonfinite == "raise":
            raise NonFiniteLossError(msg, step)
        return StepResult(math.nan, full, math.nan, skipped=True, reason=msg)
    optimizer.step()
    return StepResult(float(full.mean()), full, float(norm))


# -- the driver of `python -m metabook.train` -------------------------------------------------
@dataclass
class RunResult:
    """What :func:`run` leaves behind (on every rank)."""

    learner: nn.Module
    optimizer: torch.optim.Optimizer
    step: int
    losses: list[float]
    skipped: list[int]
    out: Path
    checkpoint: Path | None
    resumed_from: int | None = None
    best_step: int | None = None
    best_score: float | None = None
    evals: list[tuple[int, float]] = field(default_factory=list)
    encoder_dir: Path | None = None


class _Metrics:
    """JSON lines in ``out/metrics.jsonl`` (+ TensorBoard when installed), rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, keep_until: int | None) -> None:
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        kept = []
        if keep_until is not None and self.path.exists():  # drop lines past the resumed checkpoint
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= keep_until]
        _atomic_write(self.path, "".join(ln + "\n" for ln in kept).encode())
        self.file = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tb"), purge_step=keep_until)
            except ImportError:  # tensorboard not installed: JSON lines only
                self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()



def _slice(ep: Episode, lo: int, hi: int) -> Episode:
    return Episode(take_tasks(ep.support_x, lo, hi), ep.support_y[lo:hi], take_tasks(ep.query_x, lo, hi),
                   ep.query_y[lo:hi], classes=list(ep.classes[lo:hi]), batched=True)


def _prepare_out(cfg: TrainConfig, ctx: DistContext, ckdir: Path) -> None:
    """Refuse to mix runs: existing checkpoints need ``resume`` or ``overwrite``."""
    existing = list_checkpoints(ckdir)
    if existing and not (cfg.resume or cfg.overwrite):
        raise CheckpointError(f"{ckdir} already holds checkpoints (latest {existing[-1].name}); pass "
                              "--resume to continue that run, --overwrite to start over, or another --out")
    if cfg.overwrite and ctx.is_main:
        out = Path(cfg.out)
        for d in (ckdir, out / "best"):
            for p in list(d.glob("step_*")) + list(d.glob(".step_*")):
                p.unlink(missing_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        for p in (out / "tb").glob("events.out.tfevents.*"):
            p.unlink()
    barrier(ctx)


def run(cfg: TrainConfig, *, transform_batch: Callable[[int, Episode], Episode] | None = None,
        source=None, built: Built | None = None) -> RunResult:
    """Meta-train as configured; single process, or one rank of a ``torchrun`` job.

    Every rank builds the same global meta-batch ``t`` (a function of
    ``(seed, t)``), tokenizes it for text tasks, keeps its
    :func:`~metabook.train.distributed.shard` and takes a :func:`meta_step`.
    Rank 0 logs and writes checkpoints to ``cfg.out/checkpoints`` every
    ``checkpoint_every`` steps and at the end; ``resume`` continues from the
    latest one bit-for-bit.  With ``val_every``, the learner is scored on the
    split's valid classes, the best checkpoint goes to ``cfg.out/best`` and
    ``patience`` stops early; the starting weights (step 0) are scored too.  Text runs end by writing the best encoder to
    ``cfg.out/encoder`` (:func:`~metabook.train.export.export_encoder`).
    ``transform_batch(step, episode)`` may edit the global batch before it is
    split (tests inject NaNs with it).  Data, encoder and options are all
    checked before anything is written.

    From Python, ``source`` (a :class:`~metabook.train.sources.TaskSource`, e.g. a
    :class:`~metabook.train.sources.SamplerSource` over your own sampler) and
    ``built`` (a :class:`~metabook.train.config.Built` around your own learner and,
    for text, its encoder and tokenizer) replace what ``cfg`` would build; ``cfg``
    still sets the sizes, the optimizer, checkpoints and validation.
    """
    cfg = cfg.resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(None if cfg.device == "auto" else cfg.device, cfg.backend)
    try:
        if source is None:  # bad --data/--split/--corpus fail here, before anything is written
            source = build_source(cfg, rank=ctx.rank, world_size=ctx.world_size)  # rank: a streamed corpus's shard
        return _run(cfg, ctx, source, transform_batch, built)
    finally:
        cleanup(ctx)


def _validate(learner: Learner, batches: list[Episode], collate, ctx: DistContext, classify: bool) -> float:
    """Valid score, the same on every rank: accuracy (%) for classification, -MSE for regression."""
    mine = [b for i, b in enumerate(batches) if i % ctx.world_size == ctx.rank]
    total = torch.zeros(2, dtype=torch.float32)
    was = learner.training
    learner.eval()
    try:
        for ep in mine:
            ep = (collate(ep) if collate else ep).to(ctx.device)
            if classify:
                with torch.no_grad():
                    correct = (learner.predict(ep.support_x, ep.support_y, ep.query_x) == ep.query_y).float()
                total += torch.tensor([correct.mean(-1).sum().item() * 100, correct.shape[0]])
            else:
                with torch.no_grad():
                    err = (learner.logits(ep.support_x, ep.support_y, ep.query_x) - ep.query_y).pow(2)
                total += torch.tensor([-err.flatten(1).mean(1).sum().item(), err.shape[0]])
    finally:
        learner.train(was)
    if ctx.distributed:
        buf = total.to(ctx.device)
        all_reduce_sum(buf, ctx)
        total = buf.cpu()
    return float(total[0] / total[1].clamp(min=1))


def _run(cfg: TrainConfig, ctx: DistContext, source, transform_batch, built: Built | None) -> RunResult:
    out = Path(cfg.out)
    ckdir, bestdir = out / "checkpoints", out / "best"
    say = (lambda msg: print(f"[metabook.train] {msg}", file=sys.stderr, flush=True)) if ctx.is_main \
        else (lambda msg: None)
    seed_everything(cfg.seed)  # the same initialization on every rank ...
    if built is None:
        built = build(cfg)  # an unknown encoder or a mismatched tokenizer fails here, before any write
    text = getattr(source, "text", cfg.text)
    _prepare_out(cfg, ctx, ckdir)
    learner = built.learner.to(ctx.device)
    broadcast_module(learner, ctx)  # ... made certain
    optimizer = build_optimizer(cfg, learner)
    collate = None
    if text:
        from metabook.data.collate import TextCollator
        collate = TextCollator(built.tokenizer, max_length=cfg.max_length)
    seed_everything(rank_seed(cfg.seed, ctx.rank))  # per-rank stream for anything else random
    start, skipped, consecutive, resumed = 0, [], 0, None
    best = {"score": None, "step": None, "bad": 0, "evals": []}
    if cfg.resume and latest_checkpoint(ckdir) is not None:
        ck = load_checkpoint(ckdir, learner, optimizer, model_config=cfg.model_config(), rank=ctx.rank,
                             device=ctx.device)
        start = resumed = ck.step
        skipped, consecutive = list(ck.extra.get("skipped", [])), int(ck.extra.get("consecutive_skips", 0))
        best.update(ck.extra.get("best", {}))
        if not ck.rng_restored:  # written by fewer ranks: derive this rank's stream instead
            seed_everything(int(np.random.SeedSequence([cfg.seed, ctx.rank, start]).generate_state(1)[0]))
        say(f"resumed from {ck.path.name} (step {start})")
    elif cfg.resume:
        say(f"--resume: no checkpoint in {ckdir}, starting from step 0")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and ctx.device.type == "cuda"
                                           and cfg.dtype == "float32")
    amp = (lambda: torch.autocast(ctx.device.type, dtype=torch.bfloat16)) if use_bf16 else None
    valid = source.valid_batches(cfg.meta_batch) if cfg.val_every else []
    lo, hi = shard(cfg.meta_batch, ctx.rank, ctx.world_size)
    say(f"{cfg.algorithm} on {cfg.task}: {ctx.world_size} rank(s), backend {ctx.backend or 'none'}, device "
        f"{ctx.device}, global meta-batch {cfg.meta_batch}, bf16 autocast {'on' if use_bf16 else 'off'}")
    metrics = _Metrics(out, ctx.is_main, cfg.tensorboard, keep_until=resumed)

    def state() -> dict:
        return {"skipped": skipped, "consecutive_skips": consecutive, "best": best}

    def save(done: int, directory: Path = ckdir, keep: int | None = cfg.keep_checkpoints or None) -> Path | None:
        recs = [rng_from_bytes(b) for b in gather_bytes(rng_to_bytes(capture_rng(ctx.device)), ctx)]
        path = None
        if ctx.is_main:
            path = save_checkpoint(directory, done, learner, optimizer, rng=recs, config=cfg.to_dict(),
                                   model_config=cfg.model_config(), keep=keep, extra=state())
        barrier(ctx)
        return path

    losses: list[float] = []
    last = latest_checkpoint(ckdir) if resumed is not None else None
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.algorithm,
               disable=not (ctx.is_main and cfg.progress), leave=False)
    def validate(done: int) -> bool:
        """Score the valid episodes, keep the best checkpoint; True when patience runs out."""
        score = _validate(learner, valid, collate, ctx, getattr(source, "classification", True))
        best["evals"].append([done, score])
        metrics.write({"step": done, "valid": score})
        if best["score"] is None or score > best["score"]:
            best.update(score=score, step=done, bad=0)
            save(done, bestdir, keep=1)
        else:
            best["bad"] += 1
        say(f"step {done}: valid {score:.4f} (best {best['score']:.4f} at step {best['step']})")
        return bool(cfg.patience) and best["bad"] >= cfg.patience

    if valid and start == 0:  # the starting point competes too
        validate(0)
    learner.train()
    stopped = False
    try:
        for step in bar:
            ep = source.batch(step, cfg.meta_batch)
            if transform_batch is not None:
                ep = transform_batch(step, ep)
            local = _slice(ep, lo, hi)
            if collate is not None:
                local = collate(local) if hi > lo else local
            res = meta_step(learner, optimizer, local.to(ctx.device), step=step,
                            global_batch=cfg.meta_batch, task_offset=lo, ctx=ctx, autocast=amp,
                            clip_grad=cfg.clip_grad, on_nonfinite=cfg.on_nonfinite, task_info=ep.classes)
            done = step + 1
            if res.skipped:
                skipped.append(step)
                consecutive += 1
                metrics.write({"step": done, "skipped": True, "skipped_total": len(skipped),
                               "reason": res.reason})
                say(f"skipped step {step}: {res.reason}")
                _skip_or_raise("skip", res.reason, step, [], consecutive, cfg.max_skips)
            else:
                consecutive = 0
                losses.append(res.loss)
                if done % cfg.log_every == 0:
                    metrics.write({"step": done, "loss": res.loss, "grad_norm": res.grad_norm,
                                   "lr": optimizer.param_groups[0]["lr"], "skipped_total": len(skipped),
                                   "seconds": round(time.perf_counter() - t0, 4)})
                bar.set_postfix(loss=f"{res.loss:.4f}")
            if valid and done % cfg.val_every == 0:
                stopped = validate(done)
            if stopped or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
                last = save(done)
            if stopped:
                say(f"early stop at step {done}: {cfg.patience} validations without improvement")
                break
    finally:
        metrics.close()
        bar.close()
    final = int(last.stem.split("_")[1]) if last is not None and stopped else max(start, cfg.steps)
    if best["step"] is not None:  # continue with the best weights
        load_checkpoint(bestdir, learner, None, model_config=cfg.model_config(), rank=ctx.rank,
                        device=ctx.device, restore_rng=False)
    enc_dir = None
    if built.encoder is not None and ctx.is_main:
        record = {"trained_on": source.trained_on(), "steps": final, "best_step": best["step"],
                  "best_valid": best["score"], "config": cfg.to_dict(), "encoder": built.encoder_info}
        enc_dir = export_encoder(out / "encoder", built.encoder, built.tokenizer, record)
    barrier(ctx)
    say(f"done: step {final}/{cfg.steps}, last loss {losses[-1] if losses else float('nan'):.5f}, "
        f"{len(skipped)} skipped; checkpoint {last}" + (f"; encoder {enc_dir}" if enc_dir else ""))
    return RunResult(learner, optimizer, final, losses, skipped, out, last, resumed, best["step"], best["score"],
                     [tuple(e) for e in best["evals"]], enc_dir)
