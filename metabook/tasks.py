"""Episodic task construction: :class:`EpisodeSampler` (and :class:`Episode`).

An *episode* (a few-shot task) has a support set to adapt on and a query set to
score on.  :class:`EpisodeSampler` draws N-way K-shot Q-query episodes from any
label array, deterministically for a seed, and refuses bad input loudly instead
of handing back a smaller episode than was asked for.
"""
from __future__ import annotations

import numbers
from collections import Counter
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from metabook.data.episode import Episode, EpisodeStream, check_count, stack_episodes

__all__ = ["Episode", "EpisodeSampler", "stack_episodes"]


def _index(data: Any, idx: np.ndarray) -> Any:
    if isinstance(data, torch.Tensor):
        return data[torch.as_tensor(idx, dtype=torch.long, device=data.device)]
    if isinstance(data, np.ndarray):
        return torch.as_tensor(data[idx])
    return [data[i] for i in idx]


class EpisodeSampler(EpisodeStream):
    """Draw N-way K-shot Q-query episodes from a label array.

    Args:
        labels: one label per example (ints or strings).
        n_way: classes per episode (N).
        k_shot: support examples per class (K).
        n_query: query examples per class (Q).
        data: optional inputs aligned with ``labels`` (tensor, array or list,
            e.g. sentences).  Without it, episodes carry example indices.
        classes: restrict sampling to these classes (e.g. a split's train classes).
        num_episodes: length of iteration; ``None`` iterates forever.
        seed: episode ``i`` depends only on ``(seed, i)``, so runs are reproducible
            and ``sampler.episode(i)`` is random access.
        drop_small_classes: skip classes with fewer than K+Q examples instead of
            raising.

    Raises:
        TypeError: a parameter has the wrong type (the message names it).
        ValueError: a parameter is out of range, or a class has too few examples
            (the message names the parameter or the class).
    """

    def __init__(
        self,
        labels: Sequence[Hashable] | np.ndarray | torch.Tensor,
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        data: Any = None,
        classes: Sequence[Hashable] | None = None,
        num_episodes: int | None = None,
        seed: int = 0,
        drop_small_classes: bool = False,
    ) -> None:
        self.n_way = check_count("n_way", n_way)
        self.k_shot = check_count("k_shot", k_shot)
        self.n_query = check_count("n_query", n_query)
        if num_episodes is not None:
            num_episodes = check_count("num_episodes", num_episodes)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self.num_episodes, self.seed = num_episodes, int(seed)

        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
            raise TypeError(f"labels must be a sequence of class labels, got {type(labels).__name__}")
        labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
        if len(labels) == 0:
            raise ValueError("labels is empty")
        for i, lab in enumerate(labels):
            if isinstance(lab, float) or not isinstance(lab, Hashable) or isinstance(lab, bool):
                raise TypeError(f"labels[{i}] = {lab!r} is not an int or string class label")
        if data is not None and len(data) != len(labels):
            raise ValueError(f"data has {len(data)} items but labels has {len(labels)}")
        self.labels, self.data = labels, data

        counts = Counter(labels)
        if classes is None:
            classes = sorted(counts, key=lambda c: (str(type(c)), c))
        else:
            classes = list(classes)
            missing = [c for c in classes if c not in counts]
            if missing:
                raise ValueError(f"classes: {missing[:5]!r} do not occur in labels")
            if len(set(classes)) != len(classes):
                raise ValueError("classes contains duplicates")
        need = self.k_shot + self.n_query
        small = [c for c in classes if counts[c] < need]
        if small and not drop_small_classes:
            c = small[0]
            raise ValueError(
                f"class {c!r} has {counts[c]} examples, fewer than k_shot + n_query = {need} "
                f"({len(small)} class(es) too small: {small[:5]!r}); lower k_shot/n_query "
                "or pass drop_small_classes=True")
        self.classes = [c for c in classes if c not in set(small)]
        if self.n_way > len(self.classes):
            raise ValueError(
                f"n_way={self.n_way} is larger than the number of usable classes "
                f"({len(self.classes)}, each with >= {need} examples)")
        where: dict = {c: [] for c in self.classes}
        for i, lab in enumerate(labels):
            if lab in where:
                where[lab].append(i)
        self._where = {c: np.asarray(v) for c, v in where.items()}

    @classmethod
    def from_dataset(cls, dataset: Any, split_id: str | int | None, part: str | None, n_way: int,
                     k_shot: int, n_query: int, seed: int = 0, num_episodes: int | None = None,
                     **kwargs: Any) -> "EpisodeSampler":
        """Text episodes over one part (``"train"``/``"valid"``/``"test"``) of a class split.

        ``dataset`` is an :class:`~metabook.data.intents.IntentDataset` (anything with
        ``labels``, ``texts``, ``class_names`` and ``split(split_id)``).  ``split_id=None``
        samples from all classes.  Episodes carry the sentences as ``support_x``/``query_x``
        and class names in ``episode.classes``.  Extra keyword arguments (e.g.
        ``drop_small_classes``) go to the sampler.
        """
        classes = dataset.class_names if split_id is None else dataset.split(split_id)[part]
        return cls(dataset.labels, n_way, k_shot, n_query, data=dataset.texts, classes=classes,
                   num_episodes=num_episodes, seed=seed, **kwargs)

    def episode(self, i: int) -> Episode:
        """The ``i``-th episode; depends only on ``(seed, i)``."""
        rng = np.random.default_rng([self.seed, int(i)])
        chosen = rng.choice(len(self.classes), size=self.n_way, replace=False)
        s_idx, q_idx = [], []
        for c in chosen:
            pool = self._where[self.classes[c]]
            pick = rng.choice(len(pool), size=self.k_shot + self.n_query, replace=False)
            s_idx.append(pool[pick[: self.k_shot]])
            q_idx.append(pool[pick[self.k_shot:]])
        s_idx, q_idx = np.concatenate(s_idx), np.concatenate(q_idx)
        sy = torch.arange(self.n_way).repeat_interleave(self.k_shot)
        qy = torch.arange(self.n_way).repeat_interleave(self.n_query)
        s_t, q_t = torch.as_tensor(s_idx), torch.as_tensor(q_idx)
        sx = s_t if self.data is None else _index(self.data, s_idx)
        qx = q_t if self.data is None else _index(self.data, q_idx)
        return Episode(sx, sy, qx, qy, [self.classes[c] for c in chosen], s_t, q_t)

    def __repr__(self) -> str:
        return (f"EpisodeSampler(n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query}, "
                f"classes={len(self.classes)}, num_episodes={self.num_episodes}, seed={self.seed})")
