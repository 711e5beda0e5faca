"""Fast checks of the book's documentation: docstrings, the API page, glossary, FAQ, chapter
template and citations. Nothing here executes a notebook (nbval does that)."""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import metabook

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
API = BOOK / "api.md"
CHAPTERS = sorted(BOOK.glob("ch[0-9][0-9]_*/*.ipynb"))
TEMPLATE = ["Overview", "Prerequisites", "Summary", "Exercises", "What's next"]
CJK = re.compile(r"[\u4e00-\u9fff]")
# Packages whose __all__ re-exports names defined in their submodules (see api.md).
REEXPORTING = ["metabook", "metabook.data", "metabook.tasks", "metabook.algorithms", "metabook.train"]


def cells(nb_path: Path, kind: str) -> list[str]:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


def public_modules() -> list[str]:
    """Every importable module of metabook except command-line entry points and benchmarks."""
    names = ["metabook"] + [m.name for m in pkgutil.walk_packages(metabook.__path__, "metabook.")]
    return [n for n in names if not n.endswith("__main__") and not n.startswith("metabook.bench.")
            and not any(part.startswith("_") for part in n.split("."))]


def api_modules() -> list[str]:
    return re.findall(r"^\.\. automodule:: ([\w.]+)", API.read_text(encoding="utf-8"), re.M)


def defining_module(package: str, name: str) -> str:
    """Module in which ``package.name`` is defined (for data: the module with its #: comment)."""
    from sphinx.pycode import ModuleAnalyzer

    obj = getattr(importlib.import_module(package), name)
    mod = getattr(obj, "__module__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and mod:
        return mod
    for cand in public_modules():
        if getattr(importlib.import_module(cand), name, None) is obj:
            if ("", name) in ModuleAnalyzer.for_module(cand).find_attr_docs():
                return cand
    raise AssertionError(f"{package}.{name}: no module documents it with a '#:' comment")


# ---------------------------------------------------------------- docstrings
@pytest.mark.parametrize("name", metabook.__all__)
def test_public_name_has_docstring(name):
    obj = getattr(metabook, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = obj.__doc__ or ""
        assert doc.strip(), f"metabook.{name} has no docstring"
        assert not doc.startswith(f"{obj.__name__}("), f"metabook.{name}: only the dataclass signature"
    else:  # module-level data: documented with a "#:" comment where it is defined
        defining_module("metabook", name)


# ---------------------------------------------------------------- API page
def test_api_page_modules_import():
    mods = api_modules()
    assert mods, "book/api.md has no automodule directive"
    for mod in mods:
        importlib.import_module(mod)


def test_every_public_module_is_on_the_api_page():
    missing = sorted(set(public_modules()) - set(api_modules()))
    assert not missing, f"add these modules to book/api.md: {missing}"


def test_api_page_lists_the_top_level_names_where_they_are_defined():
    text = API.read_text(encoding="utf-8")
    table = text.split("## Data")[0]
    for name in metabook.__all__:
        target = f"{defining_module('metabook', name)}.{name}"
        assert f"~{target}`" in table, f"book/api.md: the top-level table should link {target}"


@pytest.mark.parametrize("package", REEXPORTING)
def test_api_page_has_a_link_target_for_each_reexport(package):
    text = API.read_text(encoding="utf-8")
    block = re.search(rf"\.\. py:currentmodule:: {re.escape(package)}\n(.*?)```", text, re.S)
    assert block, f"book/api.md: no re-export block for {package}"
    listed = dict(re.findall(r"^\.\. py:data:: (\w+)\n.*?Re-export of :py:\w+:`([\w.]+)`",
                             block.group(1), re.M | re.S))
    mod = importlib.import_module(package)
    expected = {n: f"{defining_module(package, n)}.{n}" for n in mod.__all__
                if defining_module(package, n) != package}
    assert listed == expected, f"book/api.md: re-exports of {package} are out of date"


# ---------------------------------------------------------------- glossary, FAQ
def glossary_entries() -> list[list[str]]:
    text = (BOOK / "glossary.md").read_text(encoding="utf-8")
    block = text.split("```{glossary}", 1)[1].split("```", 1)[0]
    entries = []
    for chunk in re.split(r"\n\s*\n", block):
        terms = [ln for ln in chunk.splitlines() if ln.strip() and not ln.startswith((" ", ":"))]
        if terms:
            entries.append(terms)
    return entries


def test_glossary_has_40_bilingual_entries():
    entries = glossary_entries()
    assert len(entries) >= 40, f"glossary has {len(entries)} entries"
    for terms in entries:
        assert any(CJK.search(t) for t in terms), f"glossary entry {terms} has no Chinese term"
        assert any(re.search(r"[A-Za-z]", t) for t in terms), f"glossary entry {terms} has no English term"
    flat = [t for terms in entries for t in terms]
    assert len(flat) == len(set(flat)), "a glossary term is defined twice"


def test_faq_has_at_least_12_questions():
    faq = BOOK / "ch09_faq" / "faq.ipynb"
    questions = [ln for md in cells(faq, "markdown") for ln in md.splitlines()
                 if re.match(r"## Q\d+\. .+\?", ln)]
    assert len(questions) >= 12, questions


def test_install_status_file():
    status = json.loads((BOOK / "ch07_tools" / "install_status.json").read_text(encoding="utf-8"))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", status["measured_on"])
    assert {"python", "torch"} <= set(status["environment"])
    names = {p["name"] for p in status["packages"]}
    assert {"learn2learn", "torchmeta", "higher"} <= names
    for p in status["packages"]:
        assert {"command", "outcome", "key_error"} <= set(p), p["name"]
        assert p["outcome"] in ("works", "fails"), p["name"]
        assert p["outcome"] == "works" or p["key_error"], f"{p['name']}: a failure needs its error line"


# ---------------------------------------------------------------- every chapter
@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.parent.name)
def test_chapter_template(nb_path):
    md = cells(nb_path, "markdown")
    assert md and md[0].startswith("# ") and CJK.search(md[0].splitlines()[0]), \
        f"{nb_path.name}: the first cell should be the title, with the Chinese title beside it"
    headings = [ln[3:].strip() for text in md for ln in text.splitlines() if ln.startswith("## ")]
    positions = []
    for h in TEMPLATE:
        assert h in headings, f"{nb_path.relative_to(ROOT)}: missing '## {h}'"
        positions.append(headings.index(h))
    assert positions == sorted(positions), f"{nb_path.name}: template headings out of order"
    assert headings[-1] == "What's next", f"{nb_path.name}: 'What's next' should close the chapter"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.parent.name)
def test_chapter_committed_without_outputs(nb_path):
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{nb_path.name}: cells {dirty} have outputs; clear them before committing"


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"^@\w+\{([^,\s]+),", bib, re.M))
    cited = {}
    sources = [*BOOK.rglob("*.md"), *BOOK.rglob("*.ipynb")]
    for path in sources:
        if "_build" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join(cells(path, "markdown"))
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in group.split(","):
                cited.setdefault(key.strip(), path.relative_to(ROOT))
    missing = {k: str(v) for k, v in cited.items() if k not in keys}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_readme_results_block_is_generated_from_the_committed_results():
    from metabook.bench.report import END, START, render

    text = (ROOT / "README.md").read_text()
    block = text.split(START)[1].split(END)[0]
    assert block == "\n" + render(ROOT / "benchmarks" / "results"), (
        "README's results block is stale: run `python -m metabook.bench report --readme README.md`")


NOTEBOOKS = CHAPTERS + sorted(BOOK.glob("appendix_*/*.ipynb"))


def _code_cells(nb_path):
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return [("".join(c["source"]), c.get("metadata", {}).get("tags", []))
            for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_chapter_is_lean_and_starts_and_ends_with_the_book_helpers(nb_path):
    code = _code_cells(nb_path)
    chapter = re.search(r'setup\("(\w+)"\)', code[0][0])
    assert chapter, f"{nb_path.name}: the first code cell should be the setup cell (setup(\"chNN\"))"
    assert f'record_runtime("{chapter.group(1)}")' in code[-1][0], \
        f"{nb_path.name}: the last code cell should record the run time"
    long = [i for i, (src, _) in enumerate(code) if len(src.splitlines()) > 40]
    assert not long, f"{nb_path.name}: code cells {long} exceed 40 lines; move plumbing to metabook.book"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_chapter_has_hidden_checks_of_its_claims(nb_path):
    checks = [src for src, tags in _code_cells(nb_path)
              if "remove-cell" in tags and re.search(r"\bcheck\(|\bassert\b", src)]
    assert checks, f"{nb_path.name}: add hidden (remove-cell) cells that check what its tables claim"
