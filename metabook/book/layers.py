"""The preface's tour of ``metabook``: size presets, the data registry, the module map.

Chapter 0 shows three things about the library, each as a table or a figure built here:

* :func:`size_table`: what :func:`metabook.device.by_device` returns on a CPU and on a GPU under
  each ``METABOOK_SIZE`` setting (with :func:`env` to set a variable for a moment);
* :func:`registry_table`: :data:`metabook.data.registry.REGISTRY` summarised by data set;
* :func:`module_map`, :func:`module_list` and :func:`plot_import_map`: every ``metabook``
  module, its layer (:data:`LAYERS`), its docstring, its public names, its length and the
  ``metabook`` modules it imports, read from the source with ``ast`` (nothing is
  imported), and :func:`backward_imports`, the imports that go against the layer order.

matplotlib is imported only inside the function that draws.
"""
from __future__ import annotations

import ast
import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch

import metabook
from metabook.data.registry import REGISTRY, DataFile
from metabook.device import by_device

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["env", "size_table", "size_text", "registry_table", "LAYERS", "layer_of",
           "ModuleInfo", "describe_module", "module_map", "module_list", "backward_imports",
           "plot_import_map"]

#: The intended one-way order of the layers, lowest first, and the modules in each.
#: A module may import from its own layer and earlier ones, never from a later one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("utilities", ("device",)),
    ("data", ("data",)),
    ("tasks", ("tasks",)),
    ("models, encoders", ("models", "encoders", "bert")),
    ("algorithms", ("algorithms",)),
    ("training, evaluation", ("train",)),
    ("visualisation", ("viz",)),
    ("command line", ("bench",)),
    ("book plumbing", ("book",)),
)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of a top-level module (``"tasks"`` -> 2), or None."""
    for i, (_, modules) in enumerate(LAYERS):
        if module in modules:
            return i
    return None


# --------------------------------------------------------------------------------------
# size presets
@contextmanager
def env(name: str, value: str | None) -> Iterator[None]:
    """Set (or, for None, unset) the environment variable ``name`` inside a with-block."""
    old = os.environ.get(name)
    try:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def size_table(cpu: Any, gpu: Any) -> list[tuple[str, Any, Any]]:
    """``by_device(cpu, gpu)`` on ``cpu`` and on ``cuda``, for each ``METABOOK_SIZE``.

    Returns rows ``(setting, on_cpu, on_cuda)`` for the settings unset, ``small`` and ``full``.
    No GPU is needed: ``by_device`` only looks at the device's type.
    """
    rows = []
    for setting in (None, "small", "full"):
        with env("METABOOK_SIZE", setting):
            got = [by_device(cpu, gpu, device=torch.device(d)) for d in ("cpu", "cuda")]
        rows.append((setting or "(unset)", got[0], got[1]))
    return rows


def size_text(n_bytes: int) -> str:
    """``"1.2 MB"`` or ``"85 kB"``, with a no-break space between number and unit."""
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    if n_bytes >= 1e5:
        return f"{n_bytes / 1e6:.1f}\u00a0MB"
    return f"{n_bytes / 1e3:.0f}\u00a0kB"


# --------------------------------------------------------------------------------------
# the data registry
def registry_table(registry: Mapping[str, DataFile] | None = None) -> str:
    """A Markdown table of the registry by data set: files, size, upstream commit, licence.

    ``registry`` defaults to :data:`metabook.data.registry.REGISTRY`; data sets are the first
    folder of each file's local path.
    """
    registry = REGISTRY if registry is None else registry
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: dict(files=0, bytes=0, lic=set(), src=set()))
    for local_path, f in sorted(registry.items()):
        g = groups[local_path.split("/")[0]]
        g["files"] += 1
        g["bytes"] += f.bytes
        g["lic"].add(f.license)
        g["src"].add(f"[{f.repository}](https://github.com/{f.repository}/tree/{f.commit})")
    rows = ["| folder | files | size | upstream | licence |", "|---|---:|---:|---|---|"]
    for name, g in groups.items():
        rows.append(f"| `{name}/` | {g['files']} | {size_text(g['bytes'])} "
                    f"| {', '.join(sorted(g['src']))} | {'; '.join(sorted(g['lic']))} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------
# the module map
@dataclass(frozen=True)
class ModuleInfo:
    """What the source of one top-level ``metabook`` module says about it.

    Attributes:
        name: the module's name under ``metabook`` (``"tasks"``).
        layer: its index in :data:`LAYERS`, or None (not placed yet).
        doc: the first paragraph of its docstring, on one line.
        public: its ``__all__`` (of the package's ``__init__`` for a package).
        imports: the other top-level ``metabook`` modules it imports, sorted.
        lines: lines of source, all files of a package together.
    """

    name: str
    layer: int | None
    doc: str
    public: tuple[str, ...]
    imports: tuple[str, ...]
    lines: int

    @property
    def layer_name(self) -> str:
        """The layer's name, or ``"other"``."""
        return LAYERS[self.layer][0] if self.layer is not None else "other"


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _metabook_imports(tree: ast.Module) -> set[str]:
    """Top-level ``metabook`` modules that absolute imports in ``tree`` name."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for mod in names:
            parts = mod.split(".")
            if parts[0] == "metabook" and len(parts) > 1:
                found.add(parts[1])
    return found


def describe_module(name: str, root: str | os.PathLike | None = None) -> ModuleInfo:
    """Read the module (or package) ``metabook.<name>`` under ``root`` without importing it.

    ``root`` defaults to the installed ``metabook`` folder.
    """
    root = Path(root) if root is not None else Path(metabook.__file__).parent
    pkg = root / name
    if pkg.is_dir():
        files, head = sorted(pkg.rglob("*.py")), pkg / "__init__.py"
    else:
        files = [root / f"{name}.py"]
        head = files[0]
    if not head.is_file():
        raise FileNotFoundError(f"no module metabook.{name} under {root}")
    tree = _parse(head)
    doc = (ast.get_docstring(tree) or "").split("\n\n")[0].replace("\n", " ")
    doc = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", doc)  # rST roles -> code
    public: tuple[str, ...] = ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            public = tuple(ast.literal_eval(node.value))
    imports: set[str] = set()
    for f in files:
        imports |= _metabook_imports(_parse(f))
    imports.discard(name)
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    return ModuleInfo(name, layer_of(name), doc, public, tuple(sorted(imports)), lines)


def module_map(root: str | os.PathLike | None = None) -> dict[str, ModuleInfo]:
    """Every top-level module of ``metabook`` (under ``root``), in layer order.

    Modules without a layer come last, as ``"other"``.
    """
    root = Path(root) if root is not None else Path(metabook.__file__).parent
    names = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    infos = [describe_module(n, root) for n in names]
    infos.sort(key=lambda m: (len(LAYERS) if m.layer is None else m.layer, m.name))
    return {m.name: m for m in infos}


def module_list(modules: Mapping[str, ModuleInfo]) -> str:
    """A Markdown list: each module, its layer, length, docstring and public names."""
    items = []
    for m in modules.values():
        public = ", ".join(f"`{p}`" for p in m.public) or "none yet"
        items.append(f"- **`metabook.{m.name}`** ({m.layer_name}; {m.lines} lines). "
                     f"{m.doc}  \n  *Public names:* {public}")
    return "\n".join(items)


def backward_imports(modules: Mapping[str, ModuleInfo]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where a module imports from a later layer.

    Modules without a layer are not judged.
    """
    out = []
    for m in modules.values():
        for other in m.imports:
            later = layer_of(other)
            if m.layer is not None and later is not None and later > m.layer:
                out.append((m.name, other))
    return out


def plot_import_map(modules: Mapping[str, ModuleInfo], ax: "Axes | None" = None) -> "Axes":
    """Draw who imports whom: rows import columns; shaded cells are allowed imports.

    A dot is an import from the same or an earlier layer, a red cross one from a later
    layer. Returns the ``Axes`` (a new figure when ``ax`` is None).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(modules)
    n = len(names)
    lay = [len(LAYERS) if modules[m].layer is None else modules[m].layer for m in names]
    imports = np.array([[b in modules[a].imports for b in names] for a in names], dtype=bool)
    allowed = np.array([[lay[j] <= lay[i] for j in range(n)] for i in range(n)], dtype=bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 5.2))
    ax.imshow(np.where(allowed, 1.0, 0.0), cmap="RdYlGn", vmin=-1.2, vmax=2.2, alpha=0.35)
    ax.scatter(*np.nonzero((imports & allowed).T), s=90, color="#2c5aa0", label="import")
    ax.scatter(*np.nonzero((imports & ~allowed).T), s=130, color="#c0392b", marker="X",
               label="import against the layer order")
    ax.set_yticks(range(n), [f"{m}  ({modules[m].layer_name})" for m in names], fontsize=9)
    ax.set_xticks(range(n), names, rotation=45, ha="left", fontsize=9)
    ax.xaxis.tick_top()
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("... imports this module", fontsize=9)
    ax.set_ylabel("this module ...", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=8.5,
              frameon=False)
    ax.set_title("Who imports whom in metabook\n(green: same or earlier layer, allowed; "
                 "orange: a later layer)", fontsize=10, pad=58)
    return ax
