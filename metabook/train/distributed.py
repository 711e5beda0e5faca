"""Data parallelism over the task batch with :mod:`torch.distributed`.

The scheme (launch with ``torchrun``; one process per GPU, or per CPU slot):

* **One global task stream.**  Meta-batch ``t`` is a function of ``(seed, t)`` only
  (``SinusoidTasks.batch(index=t)``, ``EpisodeSampler.episode(i)``), identical on
  every rank and independent of the number of ranks.  (The exception: a streamed SMLMT
  corpus, :class:`~metabook.train.sources.StreamingSMLMTSource`, is sharded by line, so each
  rank's tasks come from its own lines.)
* **Each rank owns a contiguous slice of it.**  With a global meta-batch of ``B``
  tasks and ``W`` ranks, rank ``r`` takes tasks ``shard(B, r, W)``; the first
  ``B % W`` ranks get one task more.  The union over ranks is exactly the
  single-process batch.
* **Weighted all-reduce.**  Each rank back-propagates ``sum(its task losses) / B``
  and the gradients are summed over ranks, so the result is the global-batch mean
  even when the slices are uneven.  One step therefore gives the same update as a
  single process with the same ``B`` (up to floating-point summation order).
* **Per-rank RNG.**  Everything that is *not* the task stream (dropout, say) uses
  a generator seeded from ``(seed, rank)``, see :func:`rank_seed`.

The backend is NCCL when the rank drives a GPU and gloo otherwise; set
``METABOOK_DIST_BACKEND`` (or pass ``backend=``) to override.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from metabook.device import default_device

__all__ = ["DistContext", "init_distributed", "cleanup", "pick_backend", "shard", "rank_seed",
           "all_reduce_grads", "all_reduce_sum", "broadcast_module", "gather_bytes", "barrier"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, its device and the backend.

    A single process (not launched by ``torchrun``) is rank 0 of a world of 1 with
    ``backend=None``; every helper below is then a no-op.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is active (world size > 1)."""
        return self.backend is not None and self.world_size > 1


def pick_backend(device_type: str) -> str:
    """``$METABOOK_DIST_BACKEND`` if set, else ``nccl`` for CUDA and ``gloo`` otherwise."""
    return os.environ.get("METABOOK_DIST_BACKEND") or ("nccl" if device_type == "cuda" else "gloo")


def init_distributed(device: str | torch.device | None = None, backend: str | None = None) -> DistContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    ``device=None`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else CPU
    (single process: :func:`metabook.default_device`).  Returns a
    :class:`DistContext`; call :func:`cleanup` when done.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistContext(device=torch.device(device) if device is not None else default_device())
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"distributed training supports cuda and cpu devices, got {dev}")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend or pick_backend(dev.type), rank=rank, world_size=world)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                       device=dev, backend=dist.get_backend(), owns_group=owns)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(lo, hi)``: the contiguous slice of ``total`` tasks owned by ``rank``.

    The first ``total % world_size`` ranks get one task more; a rank may get
    none when ``total < world_size``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    base, extra = divmod(int(total), int(world_size))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for rank ``rank``'s own RNG stream, derived from ``(seed, rank)``."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def barrier(ctx: DistContext) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier(device_ids=[ctx.device.index] if ctx.backend == "nccl" else None)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op in a single process); returns ``t``."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Sum ``.grad`` over ranks, one flat buffer per dtype (missing grads count as 0)."""
    params = list(params)
    if not ctx.distributed:
        return
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n


@torch.no_grad()
def broadcast_module(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank."""
    if ctx.distributed:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def gather_bytes(data: bytes, ctx: DistContext) -> list[bytes]:
    """All-gather one byte string per rank (no pickle); ``[data]`` in a single process."""
    if not ctx.distributed:
        return [data]
    dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    n = torch.tensor([len(data)], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    width = max(int(s) for s in sizes)
    buf = torch.zeros(width, dtype=torch.uint8, device=dev)
    if data:
        buf[:len(data)] = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).to(dev)
    outs = [torch.empty_like(buf) for _ in range(ctx.world_size)]
    dist.all_gather(outs, buf)
    return [o[:int(s)].cpu().numpy().tobytes() for o, s in zip(outs, sizes)]
