"""The intent datasets, on the real BANKING77 / CLINC150 / HWU64 files."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metabook.data import (DataFormatError, IntentDataset, load_dataset, load_official,
                           load_unlabeled)
from metabook.data.intents import _read_banking_csv
from metabook.tasks import EpisodeSampler

FOLDER = {"banking77": "BANKING77", "clinc150": "OOS", "hwu64": "HWU64"}
COUNTS = {"banking77": (13083, 77), "clinc150": (22500, 150), "hwu64": (11036, 64)}
SIZES = {  # train/valid/test class counts per split, from shared/data/README.md
    "banking77": [(25, 25, 27)] * 5,
    "clinc150": [(50, 50, 50)] * 5,
    "hwu64": [(16, 23, 25), (30, 15, 19), (24, 18, 22), (20, 15, 29), (25, 11, 28)],
}


@pytest.fixture(scope="module")
def datasets(shared_data):
    return {name: load_dataset(name, data_dir=shared_data) for name in FOLDER}


def read_lines(path: Path) -> list:
    return [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


@pytest.mark.parametrize("name", list(FOLDER))
def test_counts_and_labels(datasets, name):
    ds = datasets[name]
    n, c = COUNTS[name]
    assert len(ds) == len(ds.texts) == len(ds.labels) == len(ds.label_ids) == n
    assert len(ds.class_names) == c and ds.class_names == sorted(set(ds.labels))
    assert ds.label_ids.dtype == np.int64
    assert all(ds.class_names[i] == y for i, y in zip(ds.label_ids, ds.labels))
    assert all(isinstance(t, str) and t for t in ds.texts)
    assert ds[0] == (ds.texts[0], ds.labels[0])


@pytest.mark.parametrize("name", list(FOLDER))
def test_splits_exactly_as_the_files_say(datasets, shared_data, name):
    ds = datasets[name]
    assert ds.splits() == ["01", "02", "03", "04", "05"]
    for sid, sizes in zip(ds.splits(), SIZES[name]):
        root = shared_data / "protaugment" / FOLDER[name] / "few_shot" / sid
        want = {p: read_lines(root / f"labels.{p}.txt") for p in ("train", "valid", "test")}
        split = ds.split(sid)
        assert split.as_dict() == want and split["train"] == split.train
        assert tuple(len(want[p]) for p in ("train", "valid", "test")) == sizes
        tr, va, te = (set(want[p]) for p in ("train", "valid", "test"))
        assert not (tr & va or tr & te or va & te)
        assert tr | va | te == set(ds.class_names)
    assert ds.split(1) == ds.split("01")
    with pytest.raises(KeyError, match="06"):
        ds.split("06")


def test_domains(datasets, shared_data):
    assert set(datasets["banking77"].domain_of.values()) == {"banking"}
    hwu = datasets["hwu64"]
    assert {c: c.split("/")[0] for c in hwu.class_names} == hwu.domain_of
    assert len(set(hwu.domain_of.values())) == 18
    clinc = datasets["clinc150"]
    domains = json.loads((shared_data / "clinc150/domains.json").read_text())
    assert clinc.domain_of == {c: d for d, cs in domains.items() for c in cs}
    assert len(clinc.domain_of) == 150 and len(set(clinc.domain_of.values())) == 10


def test_hwu64_splits_are_scenario_disjoint(datasets):
    hwu = datasets["hwu64"]
    for sid in hwu.splits():
        scen = [{hwu.domain_of[c] for c in hwu.split(sid)[p]} for p in ("train", "valid", "test")]
        assert not (scen[0] & scen[1] or scen[0] & scen[2] or scen[1] & scen[2])


def test_official_splits(shared_data, datasets):
    b = load_official("banking77", data_dir=shared_data)
    assert (len(b.train.texts), len(b.train.labels), len(b.test.texts)) == (10003, 10003, 3080)
    assert b.valid is None and b.class_names == datasets["banking77"].class_names
    assert set(b.test.labels) == set(b.class_names)
    c = load_official("clinc150", data_dir=shared_data)
    assert (len(c.train.texts), len(c.valid.texts), len(c.test.texts)) == (15000, 3000, 4500)
    assert c.class_names == datasets["clinc150"].class_names  # in-scope only, no "oos"
    with pytest.raises(ValueError, match="hwu64"):
        load_official("hwu64", data_dir=shared_data)


def test_unlabeled(shared_data):
    assert len(load_unlabeled("banking77", data_dir=shared_data)) == 13083
    wiki = load_unlabeled("wiki", data_dir=shared_data)
    assert len(wiki) == 14750 and all(wiki)


def test_episodes(datasets):
    ds = datasets["banking77"]
    train = set(ds.split("02").train)
    s = EpisodeSampler.from_dataset(ds, "02", "train", 5, 2, 3, seed=7, num_episodes=20)
    assert isinstance(s, EpisodeSampler) and len(s) == 20
    eps = list(s)
    for e in eps:
        assert set(e.classes) <= train and len(e.support_x) == 10 and len(e.query_x) == 15
        assert e.support_x == [ds.texts[i] for i in e.support_idx.tolist()]
    again = list(EpisodeSampler.from_dataset(ds, "02", "train", 5, 2, 3, seed=7, num_episodes=20))
    assert [e.support_x + e.query_x for e in eps] == [e.support_x + e.query_x for e in again]
    other = list(EpisodeSampler.from_dataset(ds, "02", "train", 5, 2, 3, seed=8, num_episodes=20))
    assert [e.support_x for e in eps] != [e.support_x for e in other]
    test_classes = set(ds.split("02").test)
    assert all(set(e.classes) <= test_classes
               for e in EpisodeSampler.from_dataset(ds, "02", "test", 5, 1, 5, num_episodes=20))
    assert len(EpisodeSampler.from_dataset(ds, None, None, 77, 1, 1).classes) == 77


def test_episode_labels_match(datasets):
    ds = datasets["hwu64"]
    e = EpisodeSampler.from_dataset(ds, "03", "valid", 4, 3, 2, seed=1).episode(0)
    for idx, ys in ((e.support_idx, e.support_y), (e.query_idx, e.query_y)):
        assert [ds.labels[i] for i in idx.tolist()] == [e.classes[y] for y in ys.tolist()]


def test_to_hf(datasets, monkeypatch):
    pytest.importorskip("datasets")
    ds = datasets["hwu64"]
    hf = ds.to_hf()
    assert hf.num_rows == 11036 and hf.features["label"].names == ds.class_names
    assert hf[5]["text"] == ds.texts[5] and hf[5]["label"] == ds.label_ids[5]
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install"):
        ds.to_hf()


# ------------------------------------------------------------------ your own folder

def write_folder(root: Path, lines=None, splits=None) -> Path:
    classes = ["a/x", "a/y", "b/z", "c/w"]
    if lines is None:
        lines = [json.dumps({"sentence": f"{c} number {i}", "label": c})
                 for c in classes for i in range(6)]
    (root / "full.jsonl").write_text("\n".join(lines) + "\n")
    for sid, parts in (splits or {"01": (["a/x", "a/y"], ["b/z"], ["c/w"])}).items():
        d = root / "few_shot" / sid
        d.mkdir(parents=True)
        for part, names in zip(("train", "valid", "test"), parts):
            (d / f"labels.{part}.txt").write_text("".join(n + "\n" for n in names))
    return root


def test_bring_your_own_folder(tmp_path):
    root = write_folder(tmp_path)
    (root / "domains.json").write_text(json.dumps({"A": ["a/x", "a/y"], "B": ["b/z"]}))
    for arg in (root, str(root)):
        ds = load_dataset(arg)
        assert isinstance(ds, IntentDataset) and len(ds) == 24 and ds.splits() == ["01"]
        assert ds.split("01").as_dict() == {"train": ["a/x", "a/y"], "valid": ["b/z"],
                                            "test": ["c/w"]}
        assert ds.domain_of == {"a/x": "A", "a/y": "A", "b/z": "B"}
    e = EpisodeSampler.from_dataset(ds, "01", "train", 2, 2, 2).episode(0)
    assert sorted(e.classes) == ["a/x", "a/y"] and len(e.query_x) == 4


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="banking77"):
        load_dataset("banking78")
    with pytest.raises(FileNotFoundError, match="full.jsonl"):
        load_dataset(tmp_path)


GOOD = '{"sentence": "hi", "label": "a/x"}'


@pytest.mark.parametrize("bad, lineno, problem", [
    ('{"sentence": "hi", "label": ', 3, "invalid JSON"),
    ('{"label": "a/x"}', 3, "missing key 'sentence'"),
    ('{"sentence": "hi"}', 3, "missing key 'label'"),
    ('["hi", "a/x"]', 3, "JSON object"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, bad, lineno, problem):
    root = write_folder(tmp_path)
    lines = (root / "full.jsonl").read_text().splitlines()
    lines[lineno - 1] = bad
    (root / "full.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=problem) as err:
        load_dataset(root)
    assert f"{root / 'full.jsonl'}, line {lineno}:" in str(err.value)
    assert err.value.lineno == lineno and err.value.path == root / "full.jsonl"


@pytest.mark.parametrize("parts, file, lineno, problem", [
    ((["a/x", "a/y"], ["b/z"], []), "labels.test.txt", None, "empty label file"),
    ((["a/x", "nope"], ["b/z"], ["c/w"]), "labels.train.txt", 2, "'nope' does not occur"),
    ((["a/x", "a/y"], ["b/z", "a/x"], ["c/w"]), "labels.valid.txt", 2, "also in"),
    ((["a/x", "a/y", "a/x"], ["b/z"], ["c/w"]), "labels.train.txt", 3, "repeated"),
])
def test_malformed_split_names_file_and_line(tmp_path, parts, file, lineno, problem):
    root = write_folder(tmp_path, splits={"01": parts})
    with pytest.raises(DataFormatError, match=problem) as err:
        load_dataset(root)
    path = root / "few_shot" / "01" / file
    where = f"{path}, line {lineno}:" if lineno else f"{path}:"
    assert str(err.value).startswith(where)


def test_malformed_csv_names_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,category\nhello,card_arrival\nno label here\n")
    with pytest.raises(DataFormatError, match=r"train.csv, line 3: expected two"):
        _read_banking_csv(path)
    path.write_text("sentence,label\nhello,card_arrival\n")
    with pytest.raises(DataFormatError, match=r"train.csv, line 1: expected header"):
        _read_banking_csv(path)
