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
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from metabook.algorithms import MAML, Reptile
from metabook.data.sinusoid import SinusoidTasks
from metabook.device import seed_everything
from metabook.tasks import Episode
from metabook.train.checkpoint import (CheckpointError, _atomic_write, capture_rng, latest_checkpoint,
                                       list_checkpoints, load_checkpoint, rng_from_bytes, rng_to_bytes,
                                       save_checkpoint)
from metabook.train.config import TrainConfig, build_learner, build_optimizer
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
             device: torch.device | str | None = None, progress: bool = False) -> dict:
    """Accuracy of ``predict(support_x, support_y, query_x) -> labels`` over episodes.

    Returns ``{"mean": ..., "ci95": ..., "n": ..., "accuracies": [...]}`` with
    accuracies in percent.  Batched episodes count each task separately.
    """
    accs: list[float] = []
    for ep in tqdm(episodes, disable=not progress, desc="evaluate", leave=False):
        if device is not None:
            ep = ep.to(device)
        pred = predict(ep.support_x, ep.support_y, ep.query_x)
        correct = (pred == ep.query_y).double()
        if ep.batched:
            accs.extend((100 * correct.mean(-1)).tolist())
        else:
            accs.append(100 * correct.mean().item())
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
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads]))


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


def meta_train(loss_fn: Callable[[Episode], torch.Tensor], batches: Iterator[Episode],
               optimizer: torch.optim.Optimizer, steps: int, *,
               device: torch.device | str | None = None, clip_grad: float | None = None,
               eval_fn: Callable[[], float] | None = None, eval_every: int = 0,
               progress: bool = True, on_nonfinite: str = "raise", max_skips: int = 10) -> TrainLog:
    """Outer loop: ``steps`` optimizer steps on ``loss_fn(meta_batch)``.

    ``loss_fn`` maps a (stacked) episode to a scalar meta-loss, e.g.
    ``lambda ep: maml.meta_loss(*ep.tensors())``, or to the 1-D tensor of
    per-task losses (``lambda ep: task_losses(maml, *ep.tensors())``), which is
    averaged and lets a non-finite loss be traced to its task.  A NaN/inf loss
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
        if device is not None:
            ep = ep.to(device)
        loss = loss_fn(ep)
        per_task = loss if loss.dim() == 1 else loss.reshape(1)
        optimizer.zero_grad(set_to_none=True)
        problem: tuple[str, list[int]] | None = None
        if not bool(torch.isfinite(per_task).all()):
            problem = _nonfinite_message(step, per_task, ep.classes if loss.dim() == 1 else None)
            if loss.dim() == 0:
                problem = (f"meta-loss is {loss.item()} at step {step}; lower the learning rates, "
                           "or clip gradients (clip_grad=...)", [])
        else:
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
def task_losses(learner: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                query_x: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    """Per-task query losses ``(B,)`` after adaptation, differentiable for MAML-family learners.

    ``losses.mean()`` is ``learner.meta_loss(...)``.  For :class:`~metabook.Reptile`
    the losses are those of the adapted weights (no graph).
    """
    if isinstance(learner, MAML):
        params = learner.params()
        return vmap(lambda *t: learner.task_loss(params, *t), randomness="different")(
            support_x, support_y, query_x, query_y)
    if isinstance(learner, Reptile):
        return _reptile_losses(learner, learner.adapt_batch(support_x, support_y), query_x, query_y)
    raise TypeError(f"task_losses supports MAML-family learners and Reptile, got {type(learner).__name__}")


def _reptile_losses(learner: Reptile, phi: dict, query_x: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    buffers = dict(learner.model.named_buffers())
    run_one = lambda p, x, y: learner.loss_fn(functional_call(learner.model, (p, buffers), (x,)), y)  # noqa: E731
    with torch.no_grad():
        return vmap(run_one, randomness="different")(phi, query_x, query_y)


@dataclass
class StepResult:
    """Outcome of :func:`meta_step`: mean loss and per-task losses of the global meta-batch."""

    loss: float
    task_losses: torch.Tensor
    grad_norm: float
    skipped: bool = False
    reason: str = ""


def meta_step(learner: nn.Module, optimizer: torch.optim.Optimizer, episode: Episode, *, step: int,
              global_batch: int | None = None, task_offset: int = 0, ctx: DistContext | None = None,
              autocast: Callable[[], ContextManager] | None = None, clip_grad: float | None = None,
              on_nonfinite: str = "raise", task_info: Sequence | None = None) -> StepResult:
    """One outer step on this rank's slice of a global meta-batch.

    ``episode`` holds this rank's tasks, which are tasks ``task_offset ..`` of a
    global meta-batch of ``global_batch`` tasks (default: all of them, single
    process).  Each rank back-propagates ``sum(local losses) / global_batch``;
    gradients are summed over ranks, so the update equals that of one process on
    the whole batch.  Reptile's update ``theta - mean(phi)`` is used as its
    gradient (SGD with ``lr=epsilon`` is exactly Reptile).  Per-task losses are
    all-reduced first, so every rank takes the same decision on a non-finite loss:
    raise :class:`NonFiniteLossError` (``on_nonfinite="raise"``) or return a
    skipped result without updating (``"skip"``; the caller counts skips).
    """
    ctx = ctx or DistContext()
    sx, sy, qx, qy = episode.tensors()
    n_local = int(sy.shape[0])
    total = n_local if global_batch is None else int(global_batch)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.zero_grad(set_to_none=True)
    amp = autocast() if autocast is not None else nullcontext()
    phi = None
    with amp:
        if n_local == 0:
            losses = torch.zeros(0, device=sy.device)
        elif isinstance(learner, Reptile):
            phi = learner.adapt_batch(sx, sy)
            losses = _reptile_losses(learner, phi, qx, qy)
        else:
            losses = task_losses(learner, sx, sy, qx, qy)
    full = torch.zeros(total, dtype=torch.float64, device=sy.device)
    full[task_offset:task_offset + n_local] = losses.detach().double()
    all_reduce_sum(full, ctx)  # every rank now sees every task's loss
    if not bool(torch.isfinite(full).all()):
        msg, bad = _nonfinite_message(step, full.cpu(), task_info)
        if on_nonfinite == "raise":
            raise NonFiniteLossError(msg, step, bad)
        return StepResult(math.nan, full, math.nan, skipped=True, reason=msg)
    if phi is not None:
        for name, p in learner.model.named_parameters():
            p.grad = (p.detach().unsqueeze(0) - phi[name]).sum(0) / total
    elif n_local:
        (losses.sum() / total).backward()
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
    return Episode(ep.support_x[lo:hi], ep.support_y[lo:hi], ep.query_x[lo:hi], ep.query_y[lo:hi],
                   classes=list(ep.classes[lo:hi]))


def _prepare_out(cfg: TrainConfig, ctx: DistContext, ckdir: Path) -> None:
    """Refuse to mix runs: existing checkpoints need ``resume`` or ``overwrite``."""
    existing = list_checkpoints(ckdir)
    if existing and not (cfg.resume or cfg.overwrite):
        raise CheckpointError(f"{ckdir} already holds checkpoints (latest {existing[-1].name}); pass "
                              "--resume to continue that run, --overwrite to start over, or another --out")
    if cfg.overwrite and ctx.is_main:
        for p in list(ckdir.glob("step_*")) + list(ckdir.glob(".step_*")) + [Path(cfg.out) / "metrics.jsonl"]:
            p.unlink(missing_ok=True)
        for p in (Path(cfg.out) / "tb").glob("events.out.tfevents.*"):
            p.unlink()
    barrier(ctx)


def run(cfg: TrainConfig, *, transform_batch: Callable[[int, Episode], Episode] | None = None) -> RunResult:
    """Meta-train as configured; single process, or one rank of a ``torchrun`` job.

    Every rank builds the same global meta-batch ``t`` (a function of
    ``(seed, t)``), keeps its :func:`~metabook.train.distributed.shard` of it
    and takes a :func:`meta_step`.  Rank 0 logs and writes checkpoints to
    ``cfg.out/checkpoints`` every ``checkpoint_every`` steps and at the end;
    ``resume`` continues from the latest one bit-for-bit.  ``transform_batch(step,
    episode)`` may edit the global batch before it is split (tests inject NaNs
    with it).  A process group the caller has already initialized is joined and
    left open; otherwise ``torchrun``'s is joined here and destroyed at the end.
    """
    cfg = cfg.resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(None if cfg.device == "auto" else cfg.device, cfg.backend)
    try:
        return _run(cfg, ctx, transform_batch)
    finally:
        cleanup(ctx)


def _run(cfg: TrainConfig, ctx: DistContext, transform_batch) -> RunResult:
    out, dtype = Path(cfg.out), getattr(torch, cfg.dtype)
    ckdir = out / "checkpoints"
    say = (lambda msg: print(f"[metabook.train] {msg}", file=sys.stderr, flush=True)) if ctx.is_main \
        else (lambda msg: None)
    _prepare_out(cfg, ctx, ckdir)
    seed_everything(cfg.seed)  # the same initialization on every rank ...
    learner = build_learner(cfg).to(ctx.device)
    broadcast_module(learner, ctx)  # ... made certain
    optimizer = build_optimizer(cfg, learner)
    seed_everything(rank_seed(cfg.seed, ctx.rank))  # per-rank stream for anything else random
    start, skipped, consecutive, resumed = 0, [], 0, None
    if cfg.resume and latest_checkpoint(ckdir) is not None:
        ck = load_checkpoint(ckdir, learner, optimizer, model_config=cfg.model_config(), rank=ctx.rank,
                             device=ctx.device)
        start = resumed = ck.step
        skipped, consecutive = list(ck.extra.get("skipped", [])), int(ck.extra.get("consecutive_skips", 0))
        if not ck.rng_restored:  # written by fewer ranks: derive this rank's stream instead
            seed_everything(int(np.random.SeedSequence([cfg.seed, ctx.rank, start]).generate_state(1)[0]))
        say(f"resumed from {ck.path.name} (step {start})")
    elif cfg.resume:
        say(f"--resume: no checkpoint in {ckdir}, starting from step 0")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and ctx.device.type == "cuda"
                                           and cfg.dtype == "float32")
    amp = (lambda: torch.autocast(ctx.device.type, dtype=torch.bfloat16)) if use_bf16 else None
    tasks = SinusoidTasks(seed=cfg.seed, dtype=dtype)
    lo, hi = shard(cfg.meta_batch, ctx.rank, ctx.world_size)
    say(f"{cfg.algorithm} on {cfg.task}: {ctx.world_size} rank(s), backend {ctx.backend or 'none'}, device "
        f"{ctx.device}, global meta-batch {cfg.meta_batch}, bf16 autocast {'on' if use_bf16 else 'off'}")
    metrics = _Metrics(out, ctx.is_main, cfg.tensorboard, keep_until=resumed)

    def save(done: int) -> Path | None:
        recs = [rng_from_bytes(b) for b in gather_bytes(rng_to_bytes(capture_rng(ctx.device)), ctx)]
        path = None
        if ctx.is_main:
            path = save_checkpoint(ckdir, done, learner, optimizer, rng=recs, config=cfg.to_dict(),
                                   model_config=cfg.model_config(), keep=cfg.keep_checkpoints or None,
                                   extra={"skipped": skipped, "consecutive_skips": consecutive})
        barrier(ctx)
        return path

    losses: list[float] = []
    last = latest_checkpoint(ckdir) if resumed is not None else None
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.algorithm,
               disable=not (ctx.is_main and cfg.progress), leave=False)
    try:
        for step in bar:
            ep = tasks.batch(cfg.meta_batch, cfg.k_shot, cfg.n_query, index=step)
            if transform_batch is not None:
                ep = transform_batch(step, ep)
            res = meta_step(learner, optimizer, _slice(ep, lo, hi).to(ctx.device), step=step,
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
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
                last = save(done)
    finally:
        metrics.close()
        bar.close()
    final = max(start, cfg.steps)
    say(f"done: step {final}/{cfg.steps}, last loss {losses[-1] if losses else float('nan'):.5f}, "
        f"{len(skipped)} skipped; checkpoint {last}")
    return RunResult(learner, optimizer, final, losses, skipped, out, last, resumed)
