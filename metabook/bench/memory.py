"""Peak memory of a piece of code: CUDA's allocator statistics, or live tensor storage on CPU.

On CPU there is no allocator counter, and process RSS mixes in the interpreter,
imports and allocator caching.  :class:`PeakTensorMemory` instead watches every
operator call (a ``TorchDispatchMode``) and tracks the bytes of tensor storage
that are alive, so the number is deterministic and counts exactly what autograd
and the algorithm keep.  It relies on ``torch.utils._python_dispatch``, a
semi-private PyTorch module.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PeakTensorMemory", "peak_memory_mib"]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storage created inside the ``with`` block (``.peak``)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self.live: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self.current -= nbytes
        self.live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self.live:
                    nbytes = storage.nbytes()
                    self.live.add(id(storage))
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._freed, id(storage), nbytes)
        return out


def peak_memory_mib(step: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Peak extra memory (MiB) of one call of ``step()`` on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with PeakTensorMemory() as meter:
        step()
    return meter.peak / 2**20
