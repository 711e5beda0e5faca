"""Several labelled intent datasets pooled into one label space: :func:`pool_intents`.

Supervised multi-task training, the non-meta control of meta-learning on labelled tasks, needs
one classification head over *every* intent of the datasets it trains on, so each intent gets
one global id, fixed for the whole run.  Intents are named ``"<dataset>:<intent>"``, so equal
names in two datasets (CLINC150's and HWU64's ``alarm``...) stay distinct classes.

A target dataset must never be seen, and the other datasets' intents that mean the same as the
target's (an *overlap list*, written by ``python -m metabook.bench overlap --target T``) are
removed first: :func:`read_overlap_list` reads such a list, and ``remove=`` drops its intents.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from metabook.data.intents import IntentDataset, load_dataset

__all__ = ["PooledIntents", "pool_intents", "read_overlap_list"]


@dataclass(frozen=True)
class PooledIntents:
    """Labelled sentences of several datasets with global label ids.

    Attributes:
        texts: every kept sentence.
        label_ids: its global class id (``np.int64``), an index into ``classes``.
        classes: the global classes, ``"<dataset>:<intent>"``: each dataset's sorted intents, in
            the order the datasets were given.
        source: the index into ``datasets`` of each sentence's dataset (``np.int64``).
        datasets: the dataset names, in the order given (a dataset left without sentences stays
            listed; :meth:`PooledIntents.members` of it is empty).
        removed: ``{dataset: sorted intents}`` that were dropped (only non-empty entries).
    """

    texts: list[str]
    label_ids: np.ndarray
    classes: list[str]
    source: np.ndarray
    datasets: list[str]
    removed: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return (f"PooledIntents(datasets={self.datasets}, classes={self.num_classes}, sentences={len(self.texts)}, "
                f"removed={ {d: len(v) for d, v in self.removed.items()} })")

    @property
    def num_classes(self) -> int:
        """Size of the global label space (the head's width)."""
        return len(self.classes)

    def members(self, dataset: int | str) -> np.ndarray:
        """Indices of the sentences of one dataset (by position in ``datasets`` or by name)."""
        d = self.datasets.index(dataset) if isinstance(dataset, str) else int(dataset)
        return np.flatnonzero(self.source == d)

    def describe(self) -> dict:
        """A JSON-able summary: datasets, class count, sentences and what was removed."""
        return {"datasets": list(self.datasets), "classes": self.num_classes, "sentences": len(self.texts),
                **({"removed_overlap": {d: list(v) for d, v in self.removed.items()}} if self.removed else {})}


def pool_intents(datasets: Sequence[str | os.PathLike | IntentDataset],
                 remove: Mapping[str, Iterable[str]] | None = None,
                 data_dir: str | os.PathLike | None = None) -> PooledIntents:
    """Pool every sentence of ``datasets`` (names, folders or loaded
    :class:`~metabook.data.intents.IntentDataset` objects) into one label space, less the
    intents in ``remove`` (``{dataset name: {intent, ...}}``, e.g. from :func:`read_overlap_list`).

    Raises ``ValueError`` (one line) for no datasets, a dataset given twice, an intent in
    ``remove`` that its dataset lacks, or nothing left.
    """
    if isinstance(datasets, (str, os.PathLike)) or not datasets:
        raise ValueError(f"pool_intents needs a non-empty list of datasets, got {datasets!r}")
    loaded = [d if isinstance(d, IntentDataset) else load_dataset(d, data_dir=data_dir) for d in datasets]
    names = [d.name if isinstance(d, IntentDataset) else os.path.basename(str(d).rstrip("/")).lower()
             for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"a dataset is given twice: {names}")
    remove = {k: set(v) for k, v in (remove or {}).items()}  # entries for datasets not pooled are unused
    texts: list[str] = []
    labels: list[int] = []
    source: list[int] = []
    classes: list[str] = []
    removed: dict[str, list[str]] = {}
    for d, (name, ds) in enumerate(zip(names, loaded)):
        drop = remove.get(name, set())
        unknown = drop - set(ds.class_names)
        if unknown:
            raise ValueError(f"the overlap list names intents that {name} lacks, e.g. {sorted(unknown)[0]!r}")
        if drop:
            removed[name] = sorted(drop)
        keep = [c for c in ds.class_names if c not in drop]
        index = {c: len(classes) + j for j, c in enumerate(keep)}
        classes += [f"{name}:{c}" for c in keep]
        for text, label in zip(ds.texts, ds.labels):
            if label in index:
                texts.append(text)
                labels.append(index[label])
                source.append(d)
    if not texts:
        raise ValueError(f"nothing is left of {names} once the overlap is removed")
    return PooledIntents(texts, np.asarray(labels, dtype=np.int64), classes, np.asarray(source, dtype=np.int64),
                         names, removed)


def read_overlap_list(path: str | os.PathLike, target: str) -> dict[str, set[str]]:
    """``{dataset: {intent, ...}}`` to remove before training for ``target``, from an overlap list
    (the JSON that ``python -m metabook.bench overlap --target TARGET`` writes).

    Raises ``ValueError`` when the file is not an overlap list for ``target``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"overlap list {str(path)!r}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"overlap list {str(path)!r} is not JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(rec, dict) or rec.get("benchmark") != "overlap" or rec.get("target") != target:
        got = rec.get("target") if isinstance(rec, dict) else None
        raise ValueError(f"{path} is not an overlap list for {target!r} (it is for {got!r}); make one with "
                         f"`python -m metabook.bench overlap --target {target}`")
    out: dict[str, set[str]] = {}
    for row in rec.get("removed", []):
        out.setdefault(row["dataset"], set()).add(row["intent"])
    return out
