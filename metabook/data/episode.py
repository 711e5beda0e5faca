"""The episode container shared by every task family: :class:`Episode`.

An *episode* (a few-shot task) has a support set to adapt on and a query set to
score on.  This module is the bottom of the data layer: samplers
(:mod:`metabook.tasks`, :mod:`metabook.data.sinusoid`, :mod:`metabook.data.smlmt`)
all return :class:`Episode` objects.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator, Sequence

import torch

__all__ = ["Episode", "EpisodeStream", "stack_episodes", "check_count"]


def _move(x: Any, device: torch.device | str) -> Any:
    return x.to(device) if isinstance(x, torch.Tensor) else x


@dataclass
class Episode:
    """One few-shot task (or a stack of B tasks with a leading task dimension).

    Labels are remapped to ``0..n_way-1``; ``classes[j]`` is the original class
    behind new label ``j``.  ``support_x``/``query_x`` are tensors, or lists of
    strings for text episodes, or index tensors when the sampler has no data.
    ``batched`` is True for a stack of tasks (set by :func:`stack_episodes` and
    task families that sample meta-batches).
    """

    support_x: Any
    support_y: torch.Tensor
    query_x: Any
    query_y: torch.Tensor
    classes: list = field(default_factory=list)
    support_idx: torch.Tensor | None = None
    query_idx: torch.Tensor | None = None

    batched: bool = False

    @property
    def n_way(self) -> int:
        """Number of classes in the episode."""
        return int(self.support_y.max().item()) + 1

    def to(self, device: torch.device | str) -> "Episode":
        """Return a copy with every tensor moved to ``device``."""
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def tensors(self) -> tuple:
        """``(support_x, support_y, query_x, query_y)``, ready for ``meta_loss``."""
        return self.support_x, self.support_y, self.query_x, self.query_y


def stack_episodes(episodes: Sequence[Episode]) -> Episode:
    """Stack B episodes into (B, N*K, ...) / (B, N*Q, ...) tensors for ``vmap``.

    Text episodes (lists of strings) stack into a list of lists.
    """
    if len(episodes) == 0:
        raise ValueError("stack_episodes: got an empty list of episodes")
    shapes = {tuple(e.support_y.shape) + tuple(e.query_y.shape) for e in episodes}
    if len(shapes) != 1:
        raise ValueError(f"stack_episodes: episodes have different sizes {sorted(shapes)}")

    def cat(name: str) -> Any:
        vals = [getattr(e, name) for e in episodes]
        if vals[0] is None:
            return None
        if isinstance(vals[0], torch.Tensor):
            return torch.stack(vals)
        return list(vals)

    return Episode(
        support_x=cat("support_x"), support_y=cat("support_y"),
        query_x=cat("query_x"), query_y=cat("query_y"),
        classes=[e.classes for e in episodes],
        support_idx=cat("support_idx"), query_idx=cat("query_idx"), batched=True,
    )


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class EpisodeStream:
    """Iteration and meta-batching for samplers that define ``episode(i)`` and ``num_episodes``.

    Episode ``i`` depends only on the sampler's seed and ``i``, so iteration order,
    batching and random access all give the same episodes.
    """

    num_episodes: int | None

    def episode(self, i: int) -> Episode:  # pragma: no cover - implemented by samplers
        raise NotImplementedError

    def __len__(self) -> int:
        if self.num_episodes is None:
            raise TypeError("this sampler is endless (num_episodes=None)")
        return self.num_episodes

    def batch(self, batch_size: int, start: int = 0) -> Episode:
        """Episodes ``start .. start+batch_size-1`` stacked with a leading task dimension."""
        batch_size = check_count("batch_size", batch_size)
        return stack_episodes([self.episode(start + b) for b in range(batch_size)])

    def batches(self, batch_size: int) -> Iterator[Episode]:
        """Iterate stacked meta-batches (endless unless ``num_episodes`` is set)."""
        i = 0
        while self.num_episodes is None or i + batch_size <= self.num_episodes:
            yield self.batch(batch_size, start=i)
            i += batch_size

    def __iter__(self) -> Iterator[Episode]:
        i = 0
        while self.num_episodes is None or i < self.num_episodes:
            yield self.episode(i)
            i += 1
