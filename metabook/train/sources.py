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
* :class:`MixtureSource` -- each task drawn from one of two sources (Hybrid-SMLMT).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabook.data.episode import Episode, stack_episodes
from metabook.data.intents import IntentDataset, load_dataset
from metabook.data.sinusoid import SinusoidTasks
from metabook.data.smlmt import SMLMTSampler
from metabook.data.smlmt_stream import StreamingSMLMTSampler
from metabook.tasks import EpisodeSampler

__all__ = ["TaskSource", "SamplerSource", "SinusoidSource", "IntentSource", "SMLMTSource", "MixtureSource",
           "StreamingSMLMTSource", "read_corpus", "STREAM_BYTES"]

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

    def episode(self, i: int) -> Episode:
        return self.sampler.episode(i)

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
