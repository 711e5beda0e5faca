"""Device selection and size presets: small on CPU, full size on GPU."""
from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

__all__ = ["default_device", "by_device", "seed_everything"]

T = TypeVar("T")


def default_device() -> torch.device:
    """CUDA when available, then Apple MPS, else CPU.

    Set ``METABOOK_DEVICE`` (e.g. ``cpu``) to override.
    """
    forced = os.environ.get("METABOOK_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def by_device(cpu: T, gpu: T, device: torch.device | str | None = None) -> T:
    """Pick a size for the device: ``cpu`` on CPU, ``gpu`` on CUDA/MPS.

    ``METABOOK_SIZE=full`` forces the GPU size and ``METABOOK_SIZE=small`` the CPU size.
    """
    size = os.environ.get("METABOOK_SIZE")
    if size == "full":
        return gpu
    if size == "small":
        return cpu
    dev = torch.device(device) if device is not None else default_device()
    return cpu if dev.type == "cpu" else gpu


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
