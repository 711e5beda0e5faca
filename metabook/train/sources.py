"""Task sources for the trainer: where meta-batch ``t`` comes from.

A source returns the *global* meta-batch of step ``t`` as a function of its seed
and ``t`` alone, so every rank of a data-parallel job builds the same batch and
keeps its slice, and a resumed run sees exactly the batches it would have seen.

* :class:`SinusoidSource` -- the sinusoid regression family;
* :class:`IntentSource` -- N-way K-shot episodes over a class split's *train*
  classes (validation over its *valid* classes), from a registered dataset or
  any ProtAugment-layout folder;
* :class:`SMLMTSource` -- self-supervised SMLMT episodes from unlabeled sentences;
* :class:`StreamingSMLMTSource` -- the same from a corpus too large for memory, read in
  buffers and sharded over ranks (the one source whose tasks depend on the rank);
* :class:`MixtureSource` -- each task drawn from one of two sources (Hybrid-SMLMT);
* :class:`TextSource` -- unlabeled sentences for the self-supervised controls (masked-LM,
  SimCSE): task ``i`` holds the sentences of SMLMT episode ``i``, *unmasked*, labels all 0;
* :class:`SupervisedSource` -- labelled sentences of several intent datasets with *global*
  label ids, for supervised multi-task training (MAML with zero inner steps and one head
  over all intents).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabook.data.episode import Episode, stack_episodes
from metabook.data.intents import IntentDataset, load_dataset
from metabook.data.pooled import PooledIntents
from metabook.data.sinusoid import SinusoidTasks
from metabook.data.smlmt import SMLMTSampler
from metabook.data.smlmt_stream import StreamingSMLMTSampler
from metabook.tasks import EpisodeSampler

__all__ = ["TaskSource", "SamplerSource", "SinusoidSource", "IntentSource", "SMLMTSource", "MixtureSource",
           "StreamingSMLMTSource", "TextSource", "SupervisedSource", "read_corpus", "STREAM_BYTES"]

#: ``--corpus`` files larger than this many bytes are streamed (:class:`StreamingSMLMTSource`)
#: even without ``--stream``.
STREAM_BYTES: int = 256 * 2**20


class TaskSource:
    """Base: ``episode(i)`` (one task), ``batch(step, size)`` (the global meta-batch of a step),
    ``valid_batches(size)`` (validation episodes, or none), and ``trained_on()`` (what it
    exposes to training, recorded next to a trained encoder)."""

    text = True  #: whether episodes carry sentences (to be tokenized) rather than tensors
    classification = True  #: validation scores accuracy (else minus the query MSE)

    def episode(self, i: int) -> Episode:
        raise NotImplementedError

    def batch(self, step: int, size: int) -> Episode:
        """Tasks ``step*size .. step*size+size-1``, stacked."""
        return stack_episodes([self.episode(step * size + j) for j in range(size)])

    def valid_batches(self, size: int) -> list[Episode]:
        """Validation meta-batches (empty when the source has no validation classes)."""
        return []

    def trained_on(self) -> dict:
        """A JSON-able description of the data that training sees."""
        return {}


class SamplerSource(TaskSource):
    """Any episode sampler (``episode(i)``): text, embeddings or tensors.

    Args:
        train: the sampler of training episodes.
        valid: an optional sampler of validation episodes (``valid_episodes`` of them).
        trained_on: what to record about the data (e.g. datasets and classes).
        text: whether the episodes carry sentences (tokenized by the trainer).
    """

    def __init__(self, train: Any, valid: Any = None, valid_episodes: int = 100, trained_on: dict | None = None,
                 text: bool = True) -> None:
        self.train, self.valid, self.valid_episodes = train, valid, int(valid_episodes)
        self._trained_on, self.text = dict(trained_on or {}), bool(text)

    def episode(self, i: int) -> Episode:
        return self.train.episode(i)

    def valid_batches(self, size: int) -> list[Episode]:
        if self.valid is None:
            return []
        n = self.valid_episodes
        return [stack_episodes([self.valid.episode(j) for j in range(i, min(n, i + size))])
                for i in range(0, n, size)]

    def trained_on(self) -> dict:
        return dict(self._trained_on)


class SinusoidSource(TaskSource):
    """Sinusoid regression tasks (Finn et al., 2017); validation on tasks of another seed."""

    text = False
    classification = False

    def __init__(self, k_shot: int, n_query: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                 valid_tasks: int = 0) -> None:
        self.tasks = SinusoidTasks(seed=seed, dtype=dtype)
        self.valid = SinusoidTasks(seed=seed + 10_000, dtype=dtype)
        self.k_shot, self.n_query, self.valid_tasks = k_shot, n_query, valid_tasks

    def batch(self, step: int, size: int) -> Episode:
        return self.tasks.batch(size, self.k_shot, self.n_query, index=step)

    def valid_batches(self, size: int) -> list[Episode]:
        n = self.valid_tasks
        return [self.valid.batch(min(size, n - i), self.k_shot, self.n_query, index=i // size)
                for i in range(0, n, size)]

    def trained_on(self) -> dict:
        return {"task": "sinusoid"}


def _data_name(data: str | os.PathLike) -> str:
    return os.path.basename(str(data).rstrip("/")).lower()


class IntentSource(SamplerSource):
    """Episodes over one class split of an intent dataset: train classes for training,
    valid classes for validation; the test classes are never touched.

    Args:
        data: ``"banking77"``, ``"clinc150"``, ``"hwu64"`` or a ProtAugment-layout folder
            (or an :class:`~metabook.data.intents.IntentDataset`).
        split: the class split id (``"01"`` ...); ``ValueError`` naming the available
            ones when the data lacks it.
        valid_shot: K of the validation episodes (default ``k_shot``).
    """

    def __init__(self, data: str | os.PathLike | IntentDataset, split: str, n_way: int, k_shot: int,
                 n_query: int, seed: int = 0, valid_episodes: int = 100, data_dir: str | None = None,
                 valid_shot: int | None = None) -> None:
        self.dataset = data if isinstance(data, IntentDataset) else load_dataset(data, data_dir=data_dir)
        self.name = self.dataset.name if isinstance(data, IntentDataset) else _data_name(data)
        if str(split) not in self.dataset.splits():
            raise ValueError(f"--split {split!r}: {self.name} has the class splits {self.dataset.splits()}")
        self.split = str(split)
        train = EpisodeSampler.from_dataset(self.dataset, self.split, "train", n_way, k_shot, n_query, seed=seed)
        valid = EpisodeSampler.from_dataset(self.dataset, self.split, "valid", n_way, valid_shot or k_shot,
                                            n_query, seed=seed + 10_000)
        super().__init__(train, valid, valid_episodes)

    def trained_on(self) -> dict:
        split = self.dataset.split(self.split)
        return {"task": "intents", "data": self.name, "split": self.split, "train_classes": list(split.train),
                "valid_classes": list(split.valid)}


def read_corpus(path: str | os.PathLike) -> list[str]:
    """Sentences of a UTF-8 text file, one a line (blank lines dropped); a clear error otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--corpus {str(path)!r}: no such file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--corpus {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    if not lines:
        raise ValueError(f"--corpus {str(path)!r} is empty: it needs one sentence a line")
    return lines


class SMLMTSource(TaskSource):
    """SMLMT (Bansal et al., 2020): N words masked out of unlabeled sentences; no validation."""

    def __init__(self, sentences: list[str], n_way: int, k_shot: int, n_query: int, seed: int = 0,
                 corpus: str | None = None, **kwargs: Any) -> None:
        self.sampler = SMLMTSampler(sentences, n_way, k_shot, n_query, seed=seed, **kwargs)
        self.corpus = corpus

    def episode(self, i: int) -> Episode:
        return self.sampler.episode(i)

    def unmasked(self, i: int) -> Episode:
        """Episode ``i`` with its sentences as they are in the corpus (the label word not masked)."""
        ep = self.sampler.episode(i)
        s = self.sampler.sentences
        return replace(ep, support_x=[s[j] for j in ep.support_idx.tolist()],
                       query_x=[s[j] for j in ep.query_idx.tolist()])

    def trained_on(self) -> dict:
        return {"task": "smlmt", "corpus": self.corpus, "sentences": len(self.sampler.sentences)}


class StreamingSMLMTSource(TaskSource):
    """SMLMT episodes streamed from a corpus that need not fit in memory
    (:class:`~metabook.data.smlmt_stream.StreamingSMLMTSampler`); no validation.

    Unlike the other sources, task ``i`` depends on the rank: every rank reads only its
    lines (line ``j`` goes to rank ``j % world_size``) and builds the global meta-batch
    from them, so the slice it keeps comes from its own shard and no two ranks train on
    the same sentence.  Tasks stay a function of ``(seed, rank, world_size, i)``:
    resuming is exact with the same number of ranks.

    Args:
        corpus: a text file (UTF-8, one sentence a line) or a re-iterable of strings.
        rank, world_size: this process's shard.
        buffer_size: sentences held at once; ``**kwargs`` go to the sampler.
        name: what to call the corpus in errors and in :meth:`trained_on` (default: its path).
    """

    def __init__(self, corpus: Any, n_way: int, k_shot: int, n_query: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, buffer_size: int = 20_000, name: str | None = None, **kwargs: Any) -> None:
        self.sampler = StreamingSMLMTSampler(corpus, n_way, k_shot, n_query, seed=seed, rank=rank,
                                             world_size=world_size, buffer_size=buffer_size, name=name, **kwargs)
        self.corpus = name or (os.fspath(corpus) if isinstance(corpus, (str, os.PathLike)) else None)
        self._where: tuple[int, dict[int, int]] = (-1, {})

    def episode(self, i: int) -> Episode:
        return self.sampler.episode(i)

    def unmasked(self, i: int) -> Episode:
        """Episode ``i`` with its sentences as they are in the corpus (the label word not masked)."""
        ep = self.sampler.episode(i)  # loads episode i's buffer
        s = self.sampler
        if self._where[0] != s.buffer_index:  # corpus line number -> position in the buffer
            self._where = (s.buffer_index, {int(line): k for k, line in enumerate(s.buffer_lines)})
        where, text = self._where[1], s.buffer.sentences
        return replace(ep, support_x=[text[where[j]] for j in ep.support_idx.tolist()],
                       query_x=[text[where[j]] for j in ep.query_idx.tolist()])

    def trained_on(self) -> dict:
        s = self.sampler
        return {"task": "smlmt", "corpus": self.corpus, "stream": True, "buffer_size": s.buffer_size,
                "episodes_per_buffer": s.episodes_per_buffer, "world_size": s.world_size}


class MixtureSource(TaskSource):
    """Task ``i`` comes from ``first`` with probability ``p`` (a function of ``(seed, i)``), else
    from ``second``; validation is ``first``'s.  With intents and SMLMT: Hybrid-SMLMT."""

    def __init__(self, first: TaskSource, second: TaskSource, p: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mixture probability must be in [0, 1], got {p}")
        self.first, self.second, self.p, self.seed = first, second, float(p), int(seed)

    def episode(self, i: int) -> Episode:
        u = np.random.default_rng([self.seed, 7, int(i)]).random()
        return (self.first if u < self.p else self.second).episode(i)

    def valid_batches(self, size: int) -> list[Episode]:
        return self.first.valid_batches(size)

    def trained_on(self) -> dict:
        return {"task": "mixture", "p": self.p, "first": self.first.trained_on(),
                "second": self.second.trained_on()}


class TextSource(TaskSource):
    """Unlabeled sentences for the self-supervised controls (``--task text``).

    Task ``i`` holds exactly the sentences of SMLMT episode ``i`` of ``smlmt`` (an
    :class:`SMLMTSource` or :class:`StreamingSMLMTSource` over the same ``--corpus``, seed and
    sizes), but **unmasked**, and every label is 0: a masked-LM or SimCSE control sees, step
    for step, the very sentences a meta-learner sees on ``--task smlmt``, as plain text, with
    the same number of sentences per task (``n_way * (k_shot + n_query)``).  No validation.
    """

    def __init__(self, smlmt: SMLMTSource | StreamingSMLMTSource) -> None:
        if not callable(getattr(smlmt, "unmasked", None)):
            raise TypeError(f"TextSource needs an SMLMT source (with .unmasked(i)), got {type(smlmt).__name__}")
        self.smlmt = smlmt

    def episode(self, i: int) -> Episode:
        ep = self.smlmt.unmasked(i)
        return replace(ep, support_y=torch.zeros_like(ep.support_y), query_y=torch.zeros_like(ep.query_y),
                       classes=["text"])

    def trained_on(self) -> dict:
        return {"task": "text", "sentences": "those of the SMLMT episodes, unmasked", "smlmt": self.smlmt.trained_on()}


class _LabelSpace(list):
    """The global class names (label ``j`` is ``self[j]``), with a short ``repr`` for messages."""

    def __init__(self, classes: list[str], dataset: str) -> None:
        super().__init__(classes)
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"<a {self.dataset} task over {len(self)} global classes>"


class SupervisedSource(TaskSource):
    """Supervised multi-task training data (``--task supervised``): task ``i`` is ``k_shot +
    n_query`` labelled sentences of **one** dataset of ``pool``, with **global** label ids.

    The dataset is drawn uniformly (each dataset is one task family, whatever its size), then
    its sentences uniformly without replacement; the first ``k_shot`` are the support set, the
    rest the query set.  Labels index ``pool.classes``, one label space over all intents of
    all datasets, fixed across tasks, so one linear head over all intents is trained: with
    :class:`~metabook.algorithms.maml.MAML` and zero inner steps, ordinary supervised
    multi-task training on the query sets (the support set is then unused).  Task ``i``
    depends only on ``(seed, i)``.  No validation.

    Args:
        pool: the datasets (:func:`~metabook.data.pooled.pool_intents`), e.g. every dataset but
            the target, with the target's overlap removed.
        k_shot, n_query: sentences per task in the support and query sets.
        seed: seed of the task stream.
    """

    def __init__(self, pool: PooledIntents, k_shot: int, n_query: int, seed: int = 0) -> None:
        self.pool, self.k_shot, self.n_query, self.seed = pool, int(k_shot), int(n_query), int(seed)
        need = self.k_shot + self.n_query
        self.members = {}
        for d, name in enumerate(pool.datasets):
            idx = pool.members(d)
            if 0 < len(idx) < need:
                raise ValueError(f"{name} has {len(idx)} sentences left, fewer than k_shot + n_query = {need}")
            if len(idx):
                self.members[d] = idx
        if not self.members:
            raise ValueError("no dataset has sentences left to train on")
        self._spaces = {d: _LabelSpace(pool.classes, pool.datasets[d]) for d in self.members}

    @property
    def num_classes(self) -> int:
        """Width of the global head."""
        return self.pool.num_classes

    def episode(self, i: int) -> Episode:
        rng = np.random.default_rng([self.seed, 13, int(i)])
        keys = sorted(self.members)
        d = keys[int(rng.integers(len(keys)))]
        idx = rng.choice(self.members[d], size=self.k_shot + self.n_query, replace=False)
        y = torch.as_tensor(self.pool.label_ids[idx])
        texts = [self.pool.texts[j] for j in idx.tolist()]
        k = self.k_shot
        return Episode(texts[:k], y[:k], texts[k:], y[k:], self._spaces[d], torch.as_tensor(idx[:k]),
                       torch.as_tensor(idx[k:]))

    def trained_on(self) -> dict:
        return {"task": "supervised", **self.pool.describe()}
