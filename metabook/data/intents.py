"""Intent-detection datasets: BANKING77, CLINC150, HWU64, or your own folder.

:func:`load_dataset` reads the ProtAugment layout (Dopierre et al., ACL 2021)::

    <folder>/full.jsonl                          {"sentence": ..., "label": ...} per line
    <folder>/few_shot/01/labels.train.txt        one class name per line
    <folder>/few_shot/01/labels.valid.txt
    <folder>/few_shot/01/labels.test.txt         ... and 02, 03, ... likewise
    <folder>/domains.json                        optional: {"domain": [class, ...]}

The three registered datasets are fetched (and verified) through
:mod:`metabook.data.registry`.  :func:`load_official` gives the official
train/test splits that the full-way protocol (DNNC / CPFT) uses, and
:func:`load_fewshot` the exact splits and published K-shot draws that DNNC and CPFT
report on (``train|valid|test|train_5|train_10/{seq.in,label}``), and
:func:`load_unlabeled` the unlabeled text for self-supervised tasks.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from metabook.data.registry import REGISTRY, DataFormatError, fetch

__all__ = [
    "IntentDataset", "ClassSplit", "LabeledTexts", "OfficialSplits",
    "load_dataset", "load_official", "load_fewshot", "load_unlabeled", "DATASETS",
]

#: Registered dataset name -> ProtAugment folder under ``protaugment/``.
DATASETS = {"banking77": "BANKING77", "clinc150": "OOS", "hwu64": "HWU64"}
PARTS = ("train", "valid", "test")


def _bad(path: Path | str, lineno: int | None, problem: str) -> DataFormatError:
    where = f"{path}, line {lineno}" if lineno is not None else str(path)
    return DataFormatError(f"{where}: {problem}", path, lineno)


@dataclass(frozen=True)
class ClassSplit:
    """One class split: disjoint ``train`` / ``valid`` / ``test`` class lists, in file order.

    ``split["train"]`` works as well as ``split.train``.
    """

    split_id: str
    train: list[str]
    valid: list[str]
    test: list[str]

    def __getitem__(self, part: str) -> list[str]:
        if part not in PARTS:
            raise KeyError(f"part must be one of {PARTS}, got {part!r}")
        return getattr(self, part)

    def as_dict(self) -> dict[str, list[str]]:
        """``{"train": [...], "valid": [...], "test": [...]}``."""
        return {p: list(getattr(self, p)) for p in PARTS}


class IntentDataset:
    """Labeled utterances of one intent dataset, with its class splits.

    Attributes:
        name: dataset name (or folder path).
        texts: the utterances.
        labels: the class name of each utterance.
        label_ids: ``class_names.index(label)`` per utterance (``np.int64`` array).
        class_names: sorted class names.
        domain_of: class -> domain (CLINC150) or scenario (HWU64); ``"banking"`` for
            BANKING77; empty when unknown.
    """

    def __init__(self, name: str, texts: list[str], labels: list[str],
                 splits: dict[str, ClassSplit] | None = None,
                 domain_of: dict[str, str] | None = None) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        self.name, self.texts, self.labels = name, list(texts), list(labels)
        self.class_names = sorted(set(self.labels))
        index = {c: i for i, c in enumerate(self.class_names)}
        self.label_ids = np.fromiter((index[y] for y in self.labels), np.int64, len(self.labels))
        self.domain_of = dict(domain_of or {})
        self._splits = dict(splits or {})

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return self.texts[i], self.labels[i]

    def __repr__(self) -> str:
        return (f"IntentDataset({self.name!r}, examples={len(self)}, "
                f"classes={len(self.class_names)}, splits={self.splits()})")

    def splits(self) -> list[str]:
        """The class-split ids, e.g. ``['01', '02', '03', '04', '05']``."""
        return sorted(self._splits)

    def split(self, split_id: str | int) -> ClassSplit:
        """The train/valid/test classes of one split (``'01'`` or ``1``)."""
        sid = f"{split_id:02d}" if isinstance(split_id, int) else str(split_id)
        if sid not in self._splits:
            raise KeyError(f"{self.name}: no class split {split_id!r}; have {self.splits()}")
        return self._splits[sid]

    def to_hf(self):
        """A Hugging Face ``datasets.Dataset`` with ``text`` and ``label`` (a ``ClassLabel``)."""
        try:
            import datasets
        except ImportError as e:
            raise ImportError("IntentDataset.to_hf() needs the Hugging Face `datasets` package: "
                              "pip install 'metabook[hf]'  (or: pip install datasets)") from e
        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=self.class_names)})
        return datasets.Dataset.from_dict(
            {"text": self.texts, "label": self.label_ids.tolist()}, features=features)


# ---------------------------------------------------------------- file readers

def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad(path, lineno, f"invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise _bad(path, lineno, "expected a JSON object")
            for key in ("sentence", "label"):
                if key not in rec:
                    raise _bad(path, lineno, f"missing key {key!r}")
                if not isinstance(rec[key], str) or not rec[key].strip():
                    raise _bad(path, lineno, f"{key!r} must be a non-empty string")
            texts.append(rec["sentence"])
            labels.append(rec["label"])
    if not texts:
        raise _bad(path, None, "no examples")
    return texts, labels


def _read_labels(path: Path) -> list[tuple[int, str]]:
    """(line number, class name) per non-blank line."""
    out: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                continue
            if name in seen:
                raise _bad(path, lineno, f"class {name!r} repeated (first on line {seen[name]})")
            seen[name] = lineno
            out.append((lineno, name))
    if not out:
        raise _bad(path, None, "empty label file")
    return out


def _read_split(sid: str, get: Callable[[str], Path], known: set[str], full: Path) -> ClassSplit:
    parts: dict[str, list[str]] = {}
    owner: dict[str, Path] = {}
    for part in PARTS:
        path = get(f"few_shot/{sid}/labels.{part}.txt")
        parts[part] = []
        for lineno, name in _read_labels(path):
            if name not in known:
                raise _bad(path, lineno, f"class {name!r} does not occur in {full}")
            if name in owner:
                raise _bad(path, lineno, f"class {name!r} is also in {owner[name]}")
            owner[name] = path
            parts[part].append(name)
    return ClassSplit(sid, **parts)


def _read_domains(path: Path, known: set[str]) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise _bad(path, e.lineno, f"invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise _bad(path, None, "expected {domain: [class, ...]}")
    return {c: dom for dom, classes in data.items() for c in classes if c in known}


_SPLIT_RE = re.compile(r"few_shot/(\d+)/labels\.train\.txt$")


def _load(name: str, get: Callable[[str], Path], split_ids: list[str],
          domains: Callable[[set[str]], dict[str, str]]) -> IntentDataset:
    full = get("full.jsonl")
    texts, labels = _read_jsonl(full)
    known = set(labels)
    splits = {sid: _read_split(sid, get, known, full) for sid in split_ids}
    return IntentDataset(name, texts, labels, splits, domains(known))


def _domains(key: str, known: set[str], data_dir: str | os.PathLike | None,
             progress: bool) -> dict[str, str]:
    if key == "banking77":
        return dict.fromkeys(known, "banking")
    if key == "hwu64":  # HWU64 labels are "<scenario>/<intent>", e.g. "alarm/set"
        return {c: c.split("/", 1)[0] for c in known}
    path = fetch("clinc150/domains.json", data_dir=data_dir, progress=progress)
    return _read_domains(path, known)


def load_dataset(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> IntentDataset:
    """Load ``"banking77"``, ``"clinc150"`` (in-scope), ``"hwu64"``, or a ProtAugment-layout folder.

    Registered datasets are fetched through :func:`~metabook.data.fetch`
    (``data_dir`` / ``METABOOK_DATA`` / cache / download).  Every split's class
    names are checked against ``full.jsonl``.

    Raises:
        DataFormatError: a malformed file; the message names the file and line.
        ValueError: an unknown name that is not a folder either.
    """
    key = name_or_path.lower() if isinstance(name_or_path, str) else None
    if key in DATASETS:  # a registered name; pass a Path (or "./name") for a folder
        prefix = f"protaugment/{DATASETS[key]}/"

        def get(rel: str) -> Path:
            return fetch(prefix + rel, data_dir=data_dir, progress=progress)

        sids = sorted(m.group(1) for k in REGISTRY if k.startswith(prefix)
                      for m in [_SPLIT_RE.search(k[len(prefix):])] if m)
        return _load(key, get, sids, lambda known: _domains(key, known, data_dir, progress))

    root = Path(name_or_path).expanduser()
    if not root.is_dir():
        raise ValueError(f"unknown dataset {str(name_or_path)!r}: expected one of "
                         f"{sorted(DATASETS)} or a folder holding full.jsonl")
    if not (root / "full.jsonl").is_file():
        raise FileNotFoundError(f"{root / 'full.jsonl'} not found (ProtAugment layout expected)")

    def get_local(rel: str) -> Path:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (ProtAugment layout expected)")
        return path

    fs = root / "few_shot"
    sids = sorted(d.name for d in fs.iterdir() if d.is_dir()) if fs.is_dir() else []
    dom = root / "domains.json"
    domains = (lambda known: _read_domains(dom, known)) if dom.is_file() else (lambda known: {})
    return _load(str(name_or_path), get_local, sids, domains)


# ---------------------------------------------------------------- official splits

class LabeledTexts(NamedTuple):
    """Parallel lists of utterances and their class names."""

    texts: list[str]
    labels: list[str]


@dataclass
class OfficialSplits:
    """A dataset's official train / (valid) / test examples, for the full-way protocol."""

    name: str
    train: LabeledTexts
    test: LabeledTexts
    valid: LabeledTexts | None = None
    #: Published K-shot draws (``train_5``, ``train_10``), by K; empty for official splits.
    published: dict[int, LabeledTexts] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Sorted class names of the train split."""
        return sorted(set(self.train.labels))


def _read_banking_csv(path: Path) -> LabeledTexts:
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["text", "category"]:
            raise _bad(path, 1, f"expected header text,category, got {header!r}")
        for row in reader:
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise _bad(path, reader.line_num, f"expected two non-empty fields, got {row!r}")
            texts.append(row[0])
            labels.append(row[1])
    return LabeledTexts(texts, labels)


def _read_clinc_full(path: Path) -> dict[str, LabeledTexts]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise _bad(path, e.lineno, f"invalid JSON ({e.msg})") from None
    out = {}
    for key in ("train", "val", "test"):  # in-scope only; oos_* are ignored
        if key not in data:
            raise _bad(path, None, f"missing key {key!r}")
        texts, labels = [], []
        for i, item in enumerate(data[key]):
            if (not isinstance(item, list) or len(item) != 2
                    or not all(isinstance(x, str) for x in item)):
                raise _bad(path, None, f"{key}[{i}] is not a [text, label] pair: {item!r}")
            texts.append(item[0])
            labels.append(item[1])
        out[key] = LabeledTexts(texts, labels)
    return out


def load_official(name: str, data_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> OfficialSplits:
    """The official splits used by the full-way K-shot protocol.

    ``"banking77"``: ``train.csv`` / ``test.csv`` (10,003 / 3,080 examples, 77 classes).
    ``"clinc150"``: ``data_full.json`` in-scope train / val / test (15,000 / 3,000 / 4,500,
    150 classes); the out-of-scope examples are left out.
    """
    key = name.lower()
    if key == "banking77":
        train, test = (_read_banking_csv(fetch(f"banking77/{s}.csv", data_dir=data_dir,
                                               progress=progress)) for s in ("train", "test"))
        return OfficialSplits(key, train, test)
    if key == "clinc150":
        parts = _read_clinc_full(fetch("clinc150/data_full.json", data_dir=data_dir,
                                       progress=progress))
        return OfficialSplits(key, parts["train"], parts["test"], parts["val"])
    raise ValueError(f"no official train/test split registered for {name!r}; "
                     "have 'banking77' and 'clinc150' (HWU64 is used through its class splits)")


#: Registered name -> folder under ``fewshot_intent/`` (the DNNC / CPFT splits).
FEWSHOT = {"banking77": "BANKING77", "clinc150": "CLINC150", "hwu64": "HWU64"}


def _read_seq_label(folder: str, get: Callable[[str], Path]) -> LabeledTexts:
    """``folder/seq.in`` and ``folder/label``: one utterance / its intent a line, aligned."""
    seq, lab = get(f"{folder}/seq.in"), get(f"{folder}/label")
    out = []
    for path in (seq, lab):
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise _bad(path, None, f"not UTF-8 ({e.reason} at byte {e.start})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        for i, line in enumerate(lines, 1):
            if not line.strip():
                raise _bad(path, i, "blank line (seq.in and label must align line by line)")
        out.append([line.strip() for line in lines])
    texts, labels = out
    if len(texts) != len(labels):
        raise _bad(lab, None, f"{len(labels)} labels for {len(texts)} utterances in {seq}")
    if not texts:
        raise _bad(seq, None, "no examples")
    return LabeledTexts(texts, labels)


def load_fewshot(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> OfficialSplits:
    """The DNNC / CPFT full-way splits: ``"banking77"``, ``"clinc150"``, ``"hwu64"`` or a folder.

    A folder holds ``train/``, ``valid/`` and ``test/`` (each ``seq.in`` + ``label``), and
    optionally ``train_5/``, ``train_10/``, ... : published K-shot draws, returned in
    :attr:`OfficialSplits.published`.  Registered names fetch ``fewshot_intent/<NAME>/``
    (SHA-256 checked); their test and valid classes equal their train classes.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        def get(rel: str) -> Path:
            p = path / rel
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing; a full-way folder needs "
                                        "train|valid|test/{seq.in,label}")
            return p
        draws = sorted(int(d.name[6:]) for d in path.glob("train_*") if d.name[6:].isdigit())
        name = path.name
    else:
        key = str(name_or_path).lower()
        if key not in FEWSHOT:
            raise ValueError(f"{name_or_path!r} is neither a folder nor one of {sorted(FEWSHOT)}")
        base = f"fewshot_intent/{FEWSHOT[key]}"
        get = lambda rel: fetch(f"{base}/{rel}", data_dir=data_dir, progress=progress)  # noqa: E731
        draws = sorted(int(f.split("/")[2][6:]) for f in REGISTRY
                       if f.startswith(base + "/train_") and f.endswith("/label"))
        name = key
    parts = {p: _read_seq_label(p, get) for p in PARTS}
    published = {k: _read_seq_label(f"train_{k}", get) for k in draws}
    known = set(parts["train"].labels)
    for part in ("valid", "test", *(f"train_{k}" for k in draws)):
        lt = parts[part] if part in parts else published[int(part[6:])]
        unseen = sorted(set(lt.labels) - known)
        if unseen:
            raise DataFormatError(f"{name}/{part}: {len(unseen)} intents not in train, e.g. {unseen[0]!r}",
                                  str(path), None)
    return OfficialSplits(name, parts["train"], parts["test"], parts["valid"], published)


def load_unlabeled(name: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> list[str]:
    """Unlabeled sentences for self-supervised tasks, one per non-blank line (stripped).

    ``name`` is a text file, or ``"banking77"``, ``"clinc150"`` (alias ``"oos"``),
    ``"hwu64"``: ProtAugment's in-domain ``raw.txt``; ``"wiki"``: CLINC150's 14,750
    Wikipedia sentences (``all_wiki_sents.txt``).  Names resolve through
    :func:`~metabook.data.registry.fetch` (SHA-256 checked).
    """
    path = Path(name).expanduser()
    if not path.is_file():
        key = str(name).lower()
        key = "clinc150" if key == "oos" else key
        if key == "wiki":
            local = "clinc150/all_wiki_sents.txt"
        elif key in DATASETS:
            local = f"protaugment/{DATASETS[key]}/raw.txt"
        else:
            raise FileNotFoundError(f"{name!r} is neither a file nor one of {sorted(DATASETS) + ['wiki']}")
        path = fetch(local, data_dir=data_dir, progress=progress)
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s]
