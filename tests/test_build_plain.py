"""A plain ``jupyter-book build`` on a fresh copy provides the book's offline MathJax.

The full book takes minutes to build, so this builds a minimal book instead: the real
``_config.yml``, ``references.bib``, the real extension ``book/_ext/metabook_assets.py`` and the
real ``scripts/vendor_assets.sh`` (with its pinned ``package.json``/``package-lock.json``), but a
one-page ``_toc.yml`` whose page holds inline and display math, in a temporary folder that
has no ``_build/`` at all. ``scripts/node_modules`` is linked from the checkout when it is
complete there (the vendoring script then copies from it instead of running ``npm ci``);
otherwise the build runs ``npm ci`` itself, as it would on a fresh checkout.

Checks:

* ``jupyter-book build <dir> -W -n --keep-going`` succeeds with no warning or error in its log;
* the page loads MathJax from a local path (no scheme, no host) that exists in the output and
  is MathJax, and the widget scripts the pages would load exist there too;
* in headless Chromium, with every host but 127.0.0.1 unresolvable, the math is typeset
  (``mjx-container``, no ``mjx-merror``), so it is rendered from the local files;
* a rebuild with nothing out of date restores a deleted ``_build/html/_vendor`` (Sphinx
  itself copies ``html_extra_path`` only when it writes pages);
* the checks bite: the same book without the extension fails the strict build and its
  pages point at a MathJax file that is not there; a vendoring script that fails stops the
  build with the extension's error.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "book" / "_ext" / "metabook_assets.py"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# The same test as scripts/build_book.sh: jupyter-book exits 0 in some failure modes.
PROBLEMS = re.compile(r"^(WARNING|ERROR)|: (WARNING|ERROR|CRITICAL):|build finished with problems"
                      r"|Execution Failed|Extension error", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

PAGE = r"""# Math

Inline math $a^2 + b^2 = c^2$ and $\theta' = \theta - \alpha \nabla_\theta \mathcal{L}(\theta)$.

$$
\min_\theta \sum_{i} \mathcal{L}_{\mathcal{T}_i}\big(\theta - \alpha \nabla_\theta
\mathcal{L}_{\mathcal{T}_i}(\theta)\big)
$$

\begin{align}
p(y = k \mid x) = \frac{\exp(-d(f(x), c_k))}{\sum_{k'} \exp(-d(f(x), c_{k'}))}
\end{align}
"""


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    assert found, "jupyter-book is not installed (pip install -r requirements.txt)"
    return found


def make_book(dest: Path, *, extension: bool = True, node_modules: bool = True) -> Path:
    """A fresh minimal book in ``dest``: the real config and extension, a one-page TOC."""
    dest.mkdir(parents=True)
    shutil.copy2(ROOT / "_config.yml", dest / "_config.yml")
    shutil.copy2(ROOT / "references.bib", dest / "references.bib")
    (dest / "book" / "_ext").mkdir(parents=True)
    shutil.copy2(EXTENSION, dest / "book" / "_ext" / EXTENSION.name)
    (dest / "scripts").mkdir()
    for name in ("vendor_assets.sh", "package.json", "package-lock.json"):
        shutil.copy2(ROOT / "scripts" / name, dest / "scripts" / name)
    nm = ROOT / "scripts" / "node_modules"
    if node_modules and (nm / "mathjax" / "es5" / "tex-chtml.js").is_file() and (
            nm / "@jupyter-widgets" / "html-manager" / "dist" / "embed.js").is_file():
        (dest / "scripts" / "node_modules").symlink_to(nm, target_is_directory=True)
    (dest / "_toc.yml").write_text("format: jb-book\nroot: index\n", encoding="utf-8")
    (dest / "index.md").write_text(PAGE, encoding="utf-8")
    if not extension:
        config = (dest / "_config.yml").read_text(encoding="utf-8")
        stripped = re.sub(r"^[ \t]*- metabook_assets[ \t]*(#.*)?\n", "", config, flags=re.M)
        stripped = re.sub(r"^  local_extensions:\n(    .*\n)+", "", stripped, flags=re.M)
        assert "metabook_assets" not in yaml.safe_load(stripped).get("sphinx", {}).get(
            "config", {}).get("extensions", []) and "local_extensions:" not in stripped
        (dest / "_config.yml").write_text(stripped, encoding="utf-8")
    assert not (dest / "_build").exists()
    return dest


def build(book: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([_jupyter_book(), "build", str(book), "-W", "-n", "--keep-going"],
                          cwd=book, env=env, capture_output=True, text=True, timeout=600)
    proc.log = ANSI.sub("", proc.stdout + proc.stderr)
    return proc


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        src = dict(attrs).get("src")
        if tag == "script" and src:
            self.srcs.append(src)


def script_srcs(page: Path) -> list[str]:
    parser = _Scripts()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.srcs


def local_file(html: Path, page: Path, src: str) -> Path | None:
    """The file in ``html`` that ``src`` (as written in ``page``) loads; None if not local."""
    parts = urlsplit(src)
    if parts.scheme or parts.netloc:
        return None
    base = "/" + page.relative_to(html).as_posix()
    return html / urljoin(base, parts.path).lstrip("/")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    book = make_book(tmp_path_factory.mktemp("plain") / "book")
    proc = build(book)
    assert proc.returncode == 0 and not PROBLEMS.search(proc.log), (
        f"plain `jupyter-book build -W -n --keep-going` of a fresh copy failed "
        f"(exit {proc.returncode}):\n{proc.log[-6000:]}")
    return book


def test_plain_build_serves_mathjax_locally(built):
    html = built / "_build" / "html"
    page = html / "index.html"
    assert 'class="math' in page.read_text(encoding="utf-8"), "the page has no math to render"
    mathjax = [s for s in script_srcs(page) if "mathjax" in s.lower()]
    assert mathjax, f"{page} loads no MathJax script"
    for src in mathjax:
        path = local_file(html, page, src)
        assert path is not None, f"MathJax is loaded from another host: {src}"
        assert path.resolve().is_relative_to(html.resolve()), f"{src} points outside the output"
        assert path.is_file(), f"{page} loads MathJax from {src}, but {path} does not exist"
        assert "MathJax" in path.read_text(encoding="utf-8", errors="replace")[:20000]
    # The widget scripts that pages with widget state load (nb_ipywidgets_js) are there too.
    config = yaml.safe_load((built / "_config.yml").read_text(encoding="utf-8"))
    widget_js = list(config["sphinx"]["config"]["nb_ipywidgets_js"])
    assert widget_js
    for src in widget_js:
        path = local_file(html, html / "_static" / "page.html", src)
        assert path is not None and path.is_file(), f"widget script {src} is not in the output"


def _serve(directory: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_plain_build_renders_math_in_chromium(built, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                    "(or set $CHROMIUM)", pytrace=False)
    server = _serve(built / "_build" / "html")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             # Any other host is unresolvable: only the local files can typeset the math.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=20000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, f"Chromium failed:\n{proc.stderr[-3000:]}"
    containers = dom.count("<mjx-container")
    assert containers >= 4, f"MathJax typeset {containers} of the page's 4 formulas"
    assert "<mjx-merror" not in dom, "MathJax reported an error in the page's math"


def test_noop_rebuild_restores_vendor_folder(built):
    vendor = built / "_build" / "html" / "_vendor"
    shutil.rmtree(vendor)
    proc = build(built)
    assert proc.returncode == 0 and not PROBLEMS.search(proc.log), proc.log[-6000:]
    assert "no targets are out of date" in proc.log  # Sphinx copied nothing itself
    assert (vendor / "mathjax" / "tex-chtml.js").is_file()
    assert (vendor / "jupyter-widgets" / "embed.js").is_file()


def test_without_the_extension_the_build_fails(tmp_path):
    book = make_book(tmp_path / "book", extension=False)
    proc = build(book)
    assert proc.returncode != 0 and PROBLEMS.search(proc.log), (
        "a strict build without metabook_assets succeeded, so the test above proves nothing:\n"
        + proc.log[-4000:])
    assert "html_extra_path entry '_build/vendor' does not exist" in proc.log
    html = book / "_build" / "html"
    page = html / "index.html"
    if page.exists():  # --keep-going wrote the page: its MathJax URL must dangle
        srcs = [s for s in script_srcs(page) if "mathjax" in s.lower()]
        assert srcs and not any(local_file(html, page, s).is_file() for s in srcs)


def test_a_failed_vendoring_stops_the_build(tmp_path):
    book = make_book(tmp_path / "book", node_modules=False)
    (book / "scripts" / "vendor_assets.sh").write_text(
        "#!/usr/bin/env bash\necho 'vendor_assets: npm not found (simulated)' >&2\nexit 1\n")
    proc = build(book)
    assert proc.returncode != 0
    assert "metabook_assets: could not vendor MathJax" in proc.log, proc.log[-4000:]
    assert "npm not found (simulated)" in proc.log
