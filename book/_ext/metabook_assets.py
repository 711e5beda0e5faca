"""Sphinx extension: the book's offline front-end assets come with every build.

The pages load MathJax 3 and the Jupyter widgets HTML manager from ``_vendor/`` in the HTML
output (``mathjax_path`` and ``nb_ipywidgets_js`` in ``_config.yml``), never from a CDN. Those
files are npm packages, pinned in ``scripts/package-lock.json`` and vendored by
``scripts/vendor_assets.sh`` into ``_build/vendor/_vendor/``. This extension makes a plain

    jupyter-book build .

provide them, with nothing to run first:

* ``config-inited`` (before Sphinx validates ``html_extra_path``): run the vendoring script
  (it returns at once when the stamp says the assets are up to date, otherwise it runs
  ``npm ci`` if needed and copies the files), and make sure the vendor folder is listed in
  ``html_extra_path``, so Sphinx copies it into the output whenever it writes pages;
* ``build-finished``: copy the assets into the output if they are missing or stale there
  (Sphinx skips ``html_extra_path`` when no page is out of date), then check that every
  local script URL the pages use (``mathjax_path``, ``nb_ipywidgets_js``) exists in the
  output.

If the assets cannot be provided (no npm, no network, a failed copy) the build stops with a
Sphinx ``ExtensionError`` that says what failed and how to fix it.

Configuration (``sphinx: config:`` in ``_config.yml``; paths relative to the book's root):

``metabook_assets_script``  the vendoring script (default ``scripts/vendor_assets.sh``)
``metabook_assets_dir``     the folder it fills, listed in ``html_extra_path``
                            (default ``_build/vendor``; the files are under its ``_vendor/``)
"""
from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

__version__ = "1.0"
VENDOR = "_vendor"  # the folder, inside the assets dir and inside the HTML output
STAMP = ".stamp"  # written by the script: hash of the pinned versions and of the script


def _root(app: Sphinx) -> Path:
    return Path(app.confdir or app.srcdir)


def _assets(app: Sphinx) -> Path:
    return _root(app) / app.config.metabook_assets_dir / VENDOR


def _fail(message: str) -> ExtensionError:
    return ExtensionError(f"metabook_assets: {message}")


def vendor_assets(app: Sphinx, config: Config) -> None:
    """Run the vendoring script and list its folder in ``html_extra_path``."""
    root = _root(app)
    script = root / config.metabook_assets_script
    if not script.is_file():
        raise _fail(f"the asset vendoring script {script} is missing, so MathJax and the widget "
                    "manager cannot be provided (the pages would load files that do not exist)")
    bash = shutil.which("bash")
    if bash is None:
        raise _fail(f"bash is needed to run {script}")
    try:
        proc = subprocess.run([bash, str(script)], cwd=root, capture_output=True, text=True,
                              timeout=1800)
    except subprocess.TimeoutExpired as e:
        raise _fail(f"{script} did not finish in {e.timeout:.0f} s") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise _fail(
            f"could not vendor MathJax and the Jupyter widget manager: {script} exited with "
            f"status {proc.returncode}.\n{tail}\n"
            "Install npm (Debian/Ubuntu: apt-get install -y nodejs npm) and make the npm "
            "registry reachable, or put the packages of scripts/package-lock.json into "
            "scripts/node_modules, then build again.")
    for line in output.splitlines():
        logger.info(line)

    assets = _assets(app)
    for need in ("mathjax/tex-chtml.js", STAMP):
        if not (assets / need).is_file():
            raise _fail(f"{script} succeeded but {assets / need} is missing")
    entry = str(config.metabook_assets_dir)
    normalized = {os.path.normpath(p) for p in config.html_extra_path}
    if os.path.normpath(entry) not in normalized:
        config.html_extra_path = [*config.html_extra_path, entry]


def _local_urls(config: Config) -> list[str]:
    """The script URLs the pages use that point into the HTML output (no scheme, no host)."""
    urls = [config.mathjax_path] if getattr(config, "mathjax_path", None) else []
    urls += list(getattr(config, "nb_ipywidgets_js", None) or [])
    return [u for u in urls if not urlsplit(u).scheme and not u.startswith("//")]


def _in_output(outdir: Path, url: str) -> Path:
    # Sphinx (mathjax_path) and myst-nb (nb_ipywidgets_js) put relative URLs under _static/.
    path = urlsplit(url).path
    rel = path.lstrip("/") if path.startswith("/") else posixpath.join("_static", path)
    return outdir / posixpath.normpath(rel)


def install_into_output(app: Sphinx, exception: Exception | None) -> None:
    """Copy the assets into the HTML output if needed and check every local script URL."""
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    source, target = _assets(app), outdir / VENDOR
    stamp = (source / STAMP).read_text() if (source / STAMP).is_file() else None
    current = (target / STAMP).read_text() if (target / STAMP).is_file() else None
    if stamp is None:
        raise _fail(f"the vendored assets in {source} are gone (no {STAMP})")
    if stamp != current or not all((target / p.relative_to(source)).is_file()
                                   for p in source.rglob("*") if p.is_file()):
        logger.info("metabook_assets: copying %s -> %s", source, target)
        tmp = outdir / f".{VENDOR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    missing = [f"{url} -> {_in_output(outdir, url)}" for url in _local_urls(app.config)
               if not _in_output(outdir, url).is_file()]
    if missing:
        raise _fail("the pages load scripts that are not in the HTML output:\n  "
                    + "\n  ".join(missing))


def setup(app: Sphinx) -> dict:
    # rebuild="": where the assets come from changes no page.
    app.add_config_value("metabook_assets_script", "scripts/vendor_assets.sh", "", [str])
    app.add_config_value("metabook_assets_dir", "_build/vendor", "", [str])
    # Before sphinx.builders.html validates html_extra_path (priority 800).
    app.connect("config-inited", vendor_assets, priority=400)
    app.connect("build-finished", install_into_output)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
