"""Open every page of the built book in headless Chromium and check what a reader sees.

Needs the built book (``scripts/build_book.sh``, i.e. ``jupyter-book build . -W -n
--keep-going``) in ``_build/html`` and Chromium at ``/usr/bin/chromium`` (or ``$CHROMIUM``);
talks to it over the Chrome DevTools protocol with ``websocket-client``. Pages are served by
a local ``http.server`` on 127.0.0.1. For every page under ``_build/html`` (except
genindex, search, redirects and the ``_sources``/``_static``/``_vendor``/``_images`` folders):

* the page loads with HTTP 200 and reaches ``document.readyState == "complete"``;
* no JavaScript exception, no console error, no failed request to the local server, and no
  request at all to another host (MathJax and the widget manager are vendored);
* after MathJax has typeset the page, every math element holds an ``mjx-container``, there is
  no ``mjx-merror``, and no raw TeX (``$$``, ``\\(``, ``\\frac``, ``\\begin{`` ...) is left in
  the visible text outside code;
* every ``<img>`` has loaded (``naturalWidth > 0``);
* interactive figures work: in every matplotlib ``to_jshtml`` animation (``div.animation``)
  "next frame" and "play" change the frame shown; in every element with class
  ``mb-interactive`` each control (button, range input, select) changes the element;
  every embedded Jupyter widget view is rendered.

A full-page screenshot of each page goes to ``_build/screenshots/<page>.png``.
New chapters are covered automatically. A self-test runs the same checks on a small page
with an animation, a widget and some math, so that the checks are known to bite.
"""
from __future__ import annotations

import base64
import functools
import http.server
import io
import re
import threading
from pathlib import Path

import pytest

import cdp  # the DevTools client shared with tests/test_jupyterlab.py
from cdp import Tab

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
BUILD_CMD = "scripts/build_book.sh   (or: scripts/vendor_assets.sh && jupyter-book build . -W -n --keep-going)"
SKIP_DIRS = {"_sources", "_static", "_vendor", "_images", "_downloads"}
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
VIEWPORT = cdp.VIEWPORT
MAX_SHOT_HEIGHT = 40000  # px; longer pages are cut
SHOT_BAND = 4000  # px captured at a time

RAW_TEX = re.compile(
    r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{"
    r"|\\(?:frac|mathcal|mathbb|mathrm|text|sum|nabla|theta|phi|alpha|beta|left|right)\b")


# --------------------------------------------------------------------------- pages

def _is_redirect(path: Path) -> bool:
    head = path.read_text(encoding="utf-8", errors="replace")[:2000].lower()
    return 'http-equiv="refresh"' in head


def built_pages() -> list[str]:
    if not (HTML / "index.html").exists():
        return []
    pages = []
    for p in sorted(HTML.rglob("*.html")):
        rel = p.relative_to(HTML)
        if rel.parts[0] in SKIP_DIRS or rel.as_posix() in SKIP_PAGES or _is_redirect(p):
            continue
        pages.append(rel.as_posix())
    return pages


def _require_built() -> None:
    if not (HTML / "index.html").exists():
        pytest.fail(f"The book is not built: {HTML} is missing. Build it first with\n"
                    f"    {BUILD_CMD}", pytrace=False)


PAGES = built_pages() or ["<book not built>"]


# --------------------------------------------------------------------------- server

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - silence the access log
        pass


def _serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def site():
    _require_built()
    server, base = _serve(HTML)
    yield base
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- Chromium + CDP

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (``tests/cdp.py``), one per module; yields the DevTools endpoint."""
    with cdp.chromium() as devtools:
        yield devtools


_open_tab, _close_tab = cdp.open_tab, cdp.close_tab


# --------------------------------------------------------------------------- checks

JS_WAIT_MATHJAX = r"""(async () => {
  const hasMathScript = [...document.scripts].some(s => /mathjax/i.test(s.src || ''));
  if (!hasMathScript) return 'none';
  const t0 = Date.now();
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() - t0 > 20000) return 'MathJax did not start';
    await new Promise(r => setTimeout(r, 50));
  }
  await MathJax.startup.promise;
  return 'ok';
})()"""

JS_MATH_REPORT = r"""(() => {
  const mathEls = [...document.querySelectorAll('.math, .MathJax_Preview')];
  const untypeset = mathEls.filter(e => !e.querySelector('mjx-container')
                                        && !e.closest('mjx-container'))
                           .map(e => e.textContent.trim().slice(0, 80));
  const errors = [...document.querySelectorAll('mjx-merror')]
                   .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
  // visible text outside code, scripts and typeset math
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, kbd, samp';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const chunks = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (!p || p.closest(skip)) continue;
    if (p.checkVisibility && !p.checkVisibility()) continue;
    chunks.push(n.nodeValue);
  }
  return {n_math: mathEls.length,
          n_mjx: document.querySelectorAll('mjx-container').length,
          untypeset, errors, text: chunks.join(' ')};
})()"""

JS_IMAGES = r"""(async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r);
                         setTimeout(r, 10000); })));
  return imgs.filter(i => !(i.naturalWidth > 0))
             .map(i => (i.currentSrc || i.src || '(no src)').slice(0, 120));
})()"""

JS_WIDGETS = r"""(async () => {
  const state = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  if (!state && views.length === 0) return {n: 0, missing: []};
  const rendered = v => {
    const prev = v.previousElementSibling;
    return !!(prev && (prev.matches('.jupyter-widgets, .widget-subarea, .lm-Widget, .p-Widget')
                       || prev.querySelector('.jupyter-widgets, .lm-Widget, .p-Widget')));
  };
  const t0 = Date.now();
  while (views.some(v => !rendered(v)) && Date.now() - t0 < 20000)
    await new Promise(r => setTimeout(r, 100));
  return {n: views.length, missing: views.filter(v => !rendered(v)).map((v, i) => i),
          has_manager: !!window._jupyter_widget_embedder};
})()"""


def _anim_state(tab: Tab, i: int):
    return tab.js(f"""(() => {{
        const a = document.querySelectorAll('div.animation')[{i}];
        const img = a.querySelector('img');
        const slider = a.querySelector('input[type=range]');
        return [img ? img.src.length + ':' + img.src.slice(-64) : '',
                slider ? slider.value : ''];
    }})()""")


def check_animations(tab: Tab, problems: list[str]) -> int:
    n = tab.js("document.querySelectorAll('div.animation').length")
    for i in range(n):
        sel = f"document.querySelectorAll('div.animation')[{i}]"
        has = tab.js(f"""(() => {{ const a = {sel};
            const b = [...a.querySelectorAll('button')].map(b => b.getAttribute('onclick') || '');
            return {{next: b.some(s => /next_frame/.test(s)), play: b.some(s => /play_animation/.test(s)),
                     first: b.some(s => /first_frame/.test(s))}}; }})()""")
        if not (has["next"] and has["play"]):
            problems.append(f"animation {i}: no next/play buttons")
            continue

        def button(name):
            return (f"[...{sel}.querySelectorAll('button')]"
                    f".find(b => /{name}/.test(b.getAttribute('onclick') || ''))")

        if has["first"]:
            tab.click(button("first_frame"))
            tab.pump(0.2)
        before = _anim_state(tab, i)
        tab.click(button("next_frame"))
        tab.pump(0.3)
        after_step = _anim_state(tab, i)
        if after_step == before:
            problems.append(f"animation {i}: 'next frame' did not change the frame")
        tab.click(button("play_animation"))
        tab.pump(1.5)
        after_play = _anim_state(tab, i)
        if after_play == after_step:
            problems.append(f"animation {i}: 'play' did not change the frame within 1.5 s")
        pause = button("pause_animation")
        if tab.js(f"!!({pause})"):
            tab.click(pause)
    return n


def _interactive_state(tab: Tab, i: int) -> str:
    return tab.js(f"""(() => {{
        const e = document.querySelectorAll('.mb-interactive')[{i}];
        const vals = [...e.querySelectorAll('input, select')].map(c => c.value).join('|');
        return e.innerHTML.length + ':' + e.innerHTML + '#' + vals;
    }})()""")


def check_mb_interactive(tab: Tab, problems: list[str]) -> int:
    n = tab.js("document.querySelectorAll('.mb-interactive').length")
    for i in range(n):
        el = f"document.querySelectorAll('.mb-interactive')[{i}]"
        controls = tab.js(f"""[...{el}.querySelectorAll('button, input[type=range], select')]
                              .map(c => c.tagName.toLowerCase())""")
        if not controls:
            problems.append(f".mb-interactive {i}: has no controls")
        for j, kind in enumerate(controls):
            ctl = f"{el}.querySelectorAll('button, input[type=range], select')[{j}]"
            before = _interactive_state(tab, i)
            if kind == "button":
                tab.click(ctl)
            elif kind == "input":  # range: move it one step with the keyboard
                tab.click(ctl)
                for kind_ in ("keyDown", "keyUp"):
                    tab.send("Input.dispatchKeyEvent", type=kind_, key="ArrowRight",
                             code="ArrowRight", windowsVirtualKeyCode=39)
            else:  # select: pick the next option
                tab.js(f"""(() => {{ const s = {ctl};
                    s.selectedIndex = (s.selectedIndex + 1) % s.options.length;
                    s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")
            tab.pump(0.5)
            if _interactive_state(tab, i) == before:
                problems.append(f".mb-interactive {i}: control {j} ({kind}) changed nothing")
    return n


def _screenshot(tab: Tab, path: Path) -> None:
    """Full-page PNG, captured in bands of at most SHOT_BAND px and stitched.

    Capturing beyond the viewport resizes it, and the theme's CSS transitions would then be
    caught half-way (sidebars shifted sideways), so transitions are switched off first.
    """
    from PIL import Image  # Pillow comes with matplotlib

    tab.js("""(() => { const s = document.createElement('style');
        s.textContent = '*, *::before, *::after { transition: none !important;' +
                        ' animation: none !important; scroll-behavior: auto !important; }';
        document.head.appendChild(s); window.scrollTo(0, 0); })()""")
    metrics = tab.send("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    height = int(min(max(size["height"], VIEWPORT[1]), MAX_SHOT_HEIGHT))
    page = Image.new("RGB", (VIEWPORT[0], height), "white")
    for top in range(0, height, SHOT_BAND):
        band = min(SHOT_BAND, height - top)
        data = tab.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip=dict(x=0, y=top, width=VIEWPORT[0], height=band, scale=1))
        with Image.open(io.BytesIO(base64.b64decode(data["data"]))) as im:
            page.paste(im.convert("RGB"), (0, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path, optimize=True)


def check_page(devtools: str, url: str, shot: Path | None) -> dict:
    """Load ``url`` and run every check; return a report with a list of problems."""
    tab = _open_tab(devtools)
    problems: list[str] = []
    report = dict(problems=problems)
    try:
        tab.send("Page.enable")
        tab.send("Runtime.enable")
        tab.send("Log.enable")
        tab.send("Network.enable")
        tab.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                 deviceScaleFactor=1, mobile=False)
        tab.events.clear()
        tab.send("Page.navigate", url=url)
        tab.wait_for("Page.loadEventFired", timeout=60)
        if tab.js("document.readyState") != "complete":
            problems.append("document.readyState is not 'complete' after the load event")

        status = tab.js(JS_WAIT_MATHJAX, timeout_ms=40000)
        widgets = tab.js(JS_WIDGETS, timeout_ms=40000)
        report["n_widgets"] = widgets["n"]
        if widgets["n"] and widgets["missing"]:
            problems.append(f"{len(widgets['missing'])} of {widgets['n']} widget views not "
                            f"rendered (manager loaded: {widgets.get('has_manager')})")

        if widgets["n"]:  # widget labels are typeset after the widgets render
            tab.pump(0.5)
            status = tab.js(JS_WAIT_MATHJAX, timeout_ms=40000)
        report["mathjax"] = status
        if status not in ("ok", "none"):
            problems.append(status)
        math = tab.js(JS_MATH_REPORT)
        report["n_math"], report["n_mjx"] = math["n_math"], math["n_mjx"]
        if math["n_math"] and status == "none":
            problems.append(f"{math['n_math']} math elements but no MathJax script")
        if math["n_math"] and not math["n_mjx"]:
            problems.append("math on the page but no mjx-container after typesetting")
        if math["untypeset"]:
            problems.append(f"math not typeset: {math['untypeset'][:5]}")
        if math["errors"]:
            problems.append(f"MathJax errors: {math['errors'][:5]}")
        for m in list(RAW_TEX.finditer(math["text"]))[:5]:
            ctx = math["text"][max(0, m.start() - 40): m.end() + 40].replace("\n", " ")
            problems.append(f"raw TeX in visible text: ...{ctx}...")

        broken = tab.js(JS_IMAGES)
        report["n_img"] = tab.js("document.images.length")
        if broken:
            problems.append(f"images that did not load: {broken}")

        report["n_animations"] = check_animations(tab, problems)
        report["n_interactive"] = check_mb_interactive(tab, problems)
        tab.pump(0.3)

        # --- everything the page did on the network and in the console
        host = url.split("/")[2]
        doc_status = None
        for ev in tab.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Network.requestWillBeSent":
                req_url = p["request"]["url"]
                if req_url.startswith(("http://", "https://", "ws://", "wss://")) \
                        and req_url.split("/")[2] != host:
                    problems.append(f"request to another host: {req_url[:150]}")
            elif m == "Network.responseReceived":
                r = p["response"]
                if p.get("type") == "Document" and r["url"].split("#")[0] == url.split("#")[0]:
                    doc_status = r["status"]
                if r["url"].split("/")[2:3] == [host] and r["status"] >= 400 \
                        and not r["url"].endswith("/favicon.ico"):
                    problems.append(f"HTTP {r['status']} for {r['url']}")
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                problems.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
            elif m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                text = d.get("exception", {}).get("description") or d.get("text")
                problems.append(f"JS exception: {str(text)[:300]}")
            elif m == "Runtime.consoleAPICalled" and p["type"] == "error":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                problems.append(f"console.error: {args[:300]}")
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                e = p["entry"]
                if not str(e.get("url", "")).endswith("/favicon.ico"):
                    problems.append(f"console error ({e.get('source')}): "
                                    f"{e.get('text', '')[:200]} {e.get('url', '')}")
        report["status"] = doc_status
        if doc_status != 200:
            problems.append(f"page answered HTTP {doc_status}, not 200")

        if shot is not None:
            _screenshot(tab, shot)
    finally:
        _close_tab(devtools, tab)
    return report


# --------------------------------------------------------------------------- tests

def test_book_is_built():
    _require_built()
    assert built_pages(), f"no pages found under {HTML}"
    for p in HTML.rglob("*.html"):  # redirects (index.html) must lead to a built page
        if p.relative_to(HTML).parts[0] not in SKIP_DIRS and _is_redirect(p):
            m = re.search(r'url=([^"\'>]+)', p.read_text(encoding="utf-8"), re.I)
            assert m and (p.parent / m.group(1).split("#")[0]).exists(), \
                f"{p.relative_to(HTML)} redirects to a missing page"
    vendor = HTML / "_vendor"
    assert (vendor / "mathjax" / "tex-chtml.js").exists(), \
        f"MathJax is not vendored into {vendor}; run scripts/vendor_assets.sh and rebuild"
    assert (vendor / "jupyter-widgets" / "embed.js").exists(), \
        f"the widget manager is not vendored into {vendor}; run scripts/vendor_assets.sh"


def test_no_external_scripts_in_html():
    """Static check: no page loads a script or stylesheet from another host."""
    _require_built()
    pattern = re.compile(r"""<(?:script|link)\b[^>]*?(?:src|href)=["'](https?:)?//[^"']+["'][^>]*>""",
                         re.I)
    offenders = {}
    for p in HTML.rglob("*.html"):
        if p.relative_to(HTML).parts[0] in {"_vendor", "_sources"}:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        bad = [m.group(0)[:160] for m in pattern.finditer(text)
               if not re.search(r"""rel=["'](?:canonical|alternate)""", m.group(0), re.I)]
        if bad:
            offenders[p.relative_to(HTML).as_posix()] = bad[:3]
    assert not offenders, f"pages load assets from other hosts: {offenders}"


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(page, site, browser):
    _require_built()
    shot = SHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")
    report = check_page(browser, f"{site}/{page}", shot)
    assert not report["problems"], f"{page}:\n  " + "\n  ".join(report["problems"])


SELFTEST_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>selftest</title>
<script>window.MathJax = {{tex: {{inlineMath: [['\\\\(', '\\\\)']]}},
  options: {{processHtmlClass: 'math'}}}};</script>
<script defer src="_vendor/mathjax/tex-chtml.js"></script>
<script src="_vendor/jupyter-widgets/mathjax3-shim.js"></script>
<script src="_vendor/jupyter-widgets/embed.js"></script>
</head><body>
<p>Inline math <span class="math">\\(\\phi = \\theta - \\alpha \\nabla_\\theta \\mathcal{{L}}\\)</span>.</p>
<div class="mb-interactive"><span class="out">0</span>
  <button onclick="this.parentNode.querySelector('.out').textContent++">+1</button></div>
{animation}
{widgets}
</body></html>
"""


def test_browser_checks_bite(site, browser, tmp_path):
    """The checks find what they look for, on a page that has all of it, and catch breakage."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import animation
    import ipywidgets as w
    from ipywidgets.embed import embed_snippet

    fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
    (line,) = ax.plot([0, 1], [0, 0])
    anim = animation.FuncAnimation(fig, lambda i: line.set_ydata([0, i]) or (line,), frames=4)
    anim_html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    # matplotlib links Font Awesome 4 from a CDN; a chapter must drop that link (the book's
    # theme ships Font Awesome), and so does this page.
    anim_html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", anim_html)
    slider = w.IntSlider(value=3, max=10, description=r"$\alpha$")  # typeset by MathJax
    label = w.IntText()
    w.jslink((slider, "value"), (label, "value"))
    widgets_html = embed_snippet([w.VBox([slider, label])], requirejs=False,
                                 embed_url="_vendor/jupyter-widgets/embed.js")
    widgets_html = re.sub(r'<script src="_vendor/jupyter-widgets/embed.js"[^>]*></script>', "",
                          widgets_html)  # already loaded in <head>

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "_vendor").symlink_to(HTML / "_vendor", target_is_directory=True)
    good = SELFTEST_HTML.format(animation=anim_html, widgets=widgets_html)
    (site_dir / "good.html").write_text(good, encoding="utf-8")
    bad = (good.replace('<span class="math">', "<span>$$")            # raw TeX
               .replace("</body>", '<img src="missing.png"><script>undefined_fn()</script></body>'))
    (site_dir / "bad.html").write_text(bad, encoding="utf-8")

    server, base = _serve(site_dir)
    try:
        ok = check_page(browser, f"{base}/good.html", tmp_path / "good.png")
        ko = check_page(browser, f"{base}/bad.html", None)
    finally:
        server.shutdown()
        server.server_close()
    assert not ok["problems"], ok["problems"]
    assert ok["n_mjx"] >= 1 and ok["n_animations"] == 1 and ok["n_interactive"] == 1
    assert ok["n_widgets"] >= 1
    joined = "\n".join(ko["problems"])
    for expected in ("raw TeX", "images that did not load", "JS exception", "HTTP 404"):
        assert expected in joined, f"the checks missed '{expected}':\n{joined}"
