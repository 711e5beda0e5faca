"""metabook.book.layers: the preface's size table, registry summary and module map."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from metabook.book import layers  # noqa: E402
from metabook.data.registry import REGISTRY, DataFile  # noqa: E402

VAR = "METABOOK_TEST_LAYERS_ENV"


# ---------------------------------------------------------------- env and size presets
def test_env_sets_and_restores(monkeypatch):
    monkeypatch.setenv(VAR, "before")
    with layers.env(VAR, "inside"):
        assert os.environ[VAR] == "inside"
    assert os.environ[VAR] == "before"
    with layers.env(VAR, None):
        assert VAR not in os.environ
    assert os.environ[VAR] == "before"


def test_env_restores_an_unset_variable_after_an_error(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(RuntimeError):
        with layers.env(VAR, "x"):
            raise RuntimeError("boom")
    assert VAR not in os.environ


def test_size_table_follows_by_device(monkeypatch):
    monkeypatch.setenv("METABOOK_SIZE", "full")  # must be restored, and not leak into the rows
    rows = layers.size_table("C", "G")
    assert rows == [("(unset)", "C", "G"), ("small", "C", "C"), ("full", "G", "G")]
    assert os.environ["METABOOK_SIZE"] == "full"


def test_size_text():
    assert layers.size_text(85_000) == "85\u00a0kB"
    assert layers.size_text(1_234_567) == "1.2\u00a0MB"
    assert layers.size_text(100_000) == "0.1\u00a0MB"
    with pytest.raises(ValueError):
        layers.size_text(-1)


# ---------------------------------------------------------------- registry
def _file(path, n_bytes, repo="o/r", lic="MIT"):
    return DataFile(path, repo, "a" * 40, path, "0" * 64, n_bytes, lic)


def test_registry_table_groups_by_folder():
    reg = {"x/a.csv": _file("x/a.csv", 60_000), "x/b.csv": _file("x/b.csv", 60_000, lic="CC"),
           "y/c.csv": _file("y/c.csv", 5_000, repo="p/q")}
    lines = layers.registry_table(reg).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| `x/` | 2 | 0.1\u00a0MB | [o/r](https://github.com/o/r/tree/")
    assert lines[2].endswith("| CC; MIT |")
    assert lines[3].startswith("| `y/` | 1 | 5\u00a0kB | [p/q]")


def test_registry_table_of_the_real_registry_counts_every_file():
    lines = layers.registry_table().splitlines()[2:]
    assert sum(int(line.split("|")[2]) for line in lines) == len(REGISTRY)


# ---------------------------------------------------------------- module map
def _package(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def fake(tmp_path):
    """A fake metabook: tasks imports data (allowed), data imports algorithms (backwards)."""
    return _package(tmp_path / "metabook", {
        "__init__.py": "",
        "tasks.py": '"""Tasks: see :class:`~metabook.tasks.Episode`.\n\nMore."""\n'
                    "from metabook.data import x\nimport metabook.tasks\n__all__ = ['Episode']\n",
        "data/__init__.py": '"""Data."""\n__all__ = ["load", "fetch"]\n',
        "data/reader.py": "from metabook.algorithms import y\nfrom . import z\n",
        "algorithms/__init__.py": '"""Algorithms."""\n',
        "extra.py": "import os\n",
    })


def test_layer_of():
    assert layers.layer_of("device") == 0
    assert layers.layer_of("tasks") == 2
    assert layers.layer_of("book") == len(layers.LAYERS) - 1
    assert layers.layer_of("nonexistent") is None


def test_describe_module_reads_the_source(fake):
    info = layers.describe_module("tasks", fake)
    assert info.doc == "Tasks: see `Episode`."
    assert info.public == ("Episode",)
    assert info.imports == ("data",)  # its own name is not listed
    assert info.lines == 6
    assert info.layer_name == "tasks"
    pkg = layers.describe_module("data", fake)
    assert pkg.public == ("load", "fetch")
    assert pkg.imports == ("algorithms",)  # relative imports are not metabook modules
    assert pkg.lines == 4
    with pytest.raises(FileNotFoundError):
        layers.describe_module("missing", fake)


def test_module_map_orders_by_layer_and_finds_backward_imports(fake):
    modules = layers.module_map(fake)
    assert list(modules) == ["data", "tasks", "algorithms", "extra"]
    assert modules["extra"].layer_name == "other"
    assert layers.backward_imports(modules) == [("data", "algorithms")]
    assert "**`metabook.extra`** (other; 1 lines)" in layers.module_list(modules)
    assert "*Public names:* none yet" in layers.module_list(modules)


def test_plot_import_map_marks_backward_imports(fake):
    modules = layers.module_map(fake)
    ax = layers.plot_import_map(modules)
    ok, bad = ax.collections
    assert len(ok.get_offsets()) == 1  # tasks -> data
    assert [tuple(p) for p in bad.get_offsets()] == [(2.0, 0.0)]  # row data, column algorithms
    plt.close("all")


def test_real_metabook_imports_follow_the_layers():
    modules = layers.module_map()
    assert layers.backward_imports(modules) == []
    for name in ("device", "data", "tasks", "models", "encoders", "algorithms", "train", "viz"):
        assert modules[name].layer is not None, name
