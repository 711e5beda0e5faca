"""Small models used across the book: MLPs and a classification head on embeddings."""
from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["mlp", "sinusoid_mlp"]


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with layer sizes ``sizes`` (no final activation)."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def sinusoid_mlp(hidden: int = 40) -> nn.Sequential:
    """The 1-40-40-1 ReLU network of the MAML sinusoid experiment."""
    return mlp([1, hidden, hidden, 1])
