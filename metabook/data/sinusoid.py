"""The sinusoid regression task family of Finn et al. (2017).

A task is ``y = A sin(x - phase)`` with amplitude ``A ~ U[0.1, 5]``, phase
``~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``.  Batches come as stacked
:class:`~metabook.tasks.Episode` objects with shapes ``(B, K, 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from metabook.data.episode import Episode, check_count

__all__ = ["SinusoidTasks"]


@dataclass
class SinusoidTasks:
    """Sampler of sinusoid regression tasks; batch ``i`` depends only on ``(seed, i)``."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    seed: int = 0
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for name in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")

    @staticmethod
    def function(x: torch.Tensor, amplitude, phase) -> torch.Tensor:
        """The target ``A sin(x - phase)``."""
        return amplitude * torch.sin(x - phase)

    def batch(self, batch_size: int, k_shot: int, n_query: int = 10, index: int = 0,
              device: torch.device | str = "cpu") -> Episode:
        """A meta-batch of ``batch_size`` tasks with ``k_shot`` support and ``n_query`` query points.

        ``classes`` holds each task's ``(amplitude, phase)``.
        """
        batch_size, k_shot = check_count("batch_size", batch_size), check_count("k_shot", k_shot)
        n_query = check_count("n_query", n_query)
        rng = np.random.default_rng([self.seed, int(index)])
        amp = rng.uniform(*self.amplitude, size=(batch_size, 1, 1))
        ph = rng.uniform(*self.phase, size=(batch_size, 1, 1))
        x = rng.uniform(*self.x_range, size=(batch_size, k_shot + n_query, 1))
        t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=device)
        x, amp_t, ph_t = t(x), t(amp), t(ph)
        y = self.function(x, amp_t, ph_t)
        return Episode(x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:],
                       classes=[(float(a), float(p)) for a, p in zip(amp.ravel(), ph.ravel())], batched=True)

    def task(self, amplitude: float, phase: float, k_shot: int, n_query: int = 100, seed: int = 0,
             device: torch.device | str = "cpu") -> Episode:
        """One task with given amplitude and phase (no task dim); queries on an even grid."""
        rng = np.random.default_rng(seed)
        sx = torch.as_tensor(rng.uniform(*self.x_range, size=(k_shot, 1)), dtype=self.dtype, device=device)
        qx = torch.linspace(*self.x_range, n_query, dtype=self.dtype, device=device)[:, None]
        return Episode(sx, self.function(sx, amplitude, phase), qx, self.function(qx, amplitude, phase),
                       classes=[(amplitude, phase)])
