"""Chapter 3 in a live JupyterLab, driven from headless Chromium like a reader would.

A JupyterLab server (``python -m jupyterlab``) is started headless on a free 127.0.0.1 port
with a random token, fresh config/data/runtime/settings/workspace folders, no news, no update
check, no language servers, a read-only extension manager, autosave off and notebook windowing
off, and ``window.jupyterapp`` exposed. Its root is a temporary folder that holds a *copy* of
``book/ch03_algorithms/algorithms.ipynb`` (so nothing in the working tree is written); the
kernel imports the working-tree ``metabook`` through ``PYTHONPATH`` and gets
``$METABOOK_DATA`` and ``OMP_NUM_THREADS=1``.

Headless Chromium (fresh profile) opens JupyterLab over the DevTools protocol (see
``tests/cdp.py``), opens the notebook, runs JupyterLab's own "Run All Cells" command
(``notebook:run-all-cells``) in the live kernel and waits until the kernel is idle and no
cell shows ``[*]`` (at most ``$METABOOK_JUPYTERLAB_TIMEOUT`` s, default 900). Every code cell
must have run, with no error output. Then, in the output of the cell that calls
``adaptation_widget(...)``:

* the ``ipywidgets.interactive`` is rendered, with its six sliders and the plot (an ``<img>``);
* a real click on the "inner steps S" slider handle and two ArrowRight key presses move the
  readout from 1 to 3, the kernel recomputes, and the plot's image data changes;
* dragging the handle with the mouse to the end of the track moves the readout to the
  maximum (10) and changes the plot again;
* no error output anywhere (cells, widget output), no "Error displaying widget", no failed
  widget view, no JavaScript exception, and no request to a host other than the server.

A self-test runs the same change detector on a throwaway notebook whose slider callback
redraws the *same* figure whatever the value, and requires it to report "readout changed,
plot unchanged", so the check on chapter 3 is known to bite. It runs in the same page, in its
own kernel, while chapter 3 computes.

``$METABOOK_JUPYTERLAB_NOTEBOOK`` names another file to use as chapter 3 (e.g. a draft).

The server and its kernels, and Chromium, are stopped by process id (terminate, then kill)
when the module's tests end. A missing Chromium or JupyterLab fails the test; nothing skips.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cdp

ROOT = Path(__file__).resolve().parents[1]
CH03 = Path("book") / "ch03_algorithms" / "algorithms.ipynb"
# The notebook that is copied in as chapter 3 (another copy can be tried, e.g. while editing).
CH03_SOURCE = Path(os.environ.get("METABOOK_JUPYTERLAB_NOTEBOOK") or ROOT / CH03)
# The whole notebook must finish within this (it takes about a minute on a busy 2-core CPU).
RUN_TIMEOUT = float(os.environ.get("METABOOK_JUPYTERLAB_TIMEOUT", "900"))
SLIDER = "inner steps"  # the description of adaptation_widget's steps slider
WIDGET_CALL = r"^\s*adaptation_widget\s*\("  # the cell that shows the widget

# JupyterLab settings (user-settings overrides): no autosave into the copy, every cell in the
# DOM (no windowing), no news, no update check.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}
SERVER_CONFIG = {
    "ServerApp": {"open_browser": False},
    "LanguageServerManager": {"autodetect": False},  # jupyter-lsp: no language servers
    "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
               "expose_app_in_browser": True, "extension_manager": "readonly"},
}

SELFTEST_SOURCE = """\
import ipywidgets as widgets
import matplotlib.pyplot as plt

def show(steps):  # deliberately ignores `steps`: the plot never changes
    fig, ax = plt.subplots(figsize=(3, 2), dpi=60)
    ax.plot([0, 1, 2], [0, 1, 0])
    plt.show()

widgets.interactive(show, steps=widgets.IntSlider(value=1, min=0, max=10,
                                                  description="inner steps S"))"""


# --------------------------------------------------------------------------- processes

def _descendants(pid: int) -> list[int]:
    """Process ids of all live descendants of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _started(pid: int) -> str | None:
    """The start time of a live process (to tell it from a later one with the same id)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the server

def _notebook(source: str) -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "selftest",
                       "metadata": {}, "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


class Lab:
    def __init__(self, url: str, token: str, proc: subprocess.Popen, log: Path):
        self.url, self.token, self.proc, self.log = url, token, proc, log
        self.kernel_pids: dict[int, str | None] = {}  # the server's descendants: pid -> start

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def note_children(self) -> None:
        """Remember the server's child processes (kernels), to check they end with it."""
        for pid in _descendants(self.proc.pid):
            self.kernel_pids.setdefault(pid, _started(pid))

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture(scope="module")
def lab():
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.fail("JupyterLab is not installed: pip install -r requirements.txt "
                    "(jupyterlab>=4)", pytrace=False)
    tmp = Path(tempfile.mkdtemp(prefix="metabook-jupyterlab-"))
    root = tmp / "root"
    (root / CH03.parent).mkdir(parents=True)
    shutil.copy2(CH03_SOURCE, root / CH03)
    (root / "selftest.ipynb").write_text(json.dumps(_notebook(SELFTEST_SOURCE)))
    config = tmp / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))
    settings = tmp / "lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        f = settings / (plugin + ".jupyterlab-settings")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    for d in ("data", "runtime", "workspaces", "ipython"):
        (tmp / d).mkdir()

    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p]),
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",  # $METABOOK_DATA passes through as is
        JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
        JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_TOKEN", None)
    port, token = _free_port(), secrets.token_hex(24)
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:  # e.g. in a container
        cmd.append("--allow-root")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = Lab(f"http://127.0.0.1:{port}", token, proc, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n"
                            f"{server.log_tail()}", pytrace=False)
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within 120 s:\n{server.log_tail()}",
                                pytrace=False)
                time.sleep(0.5)
        yield server
    finally:
        server.note_children()
        if proc.poll() is None:  # shut the kernels down cleanly first
            try:
                for k in server.api("/api/kernels"):
                    server.api(f"/api/kernels/{k['id']}", method="DELETE")
            except (OSError, ValueError):
                pass
        _stop(proc)
        leftovers = [p for p, t in server.kernel_pids.items() if t and _started(p) == t]
        for pid in leftovers:  # orphaned kernels: kill them by their id
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        assert not leftovers, f"JupyterLab left processes behind: {leftovers}"


@pytest.fixture(scope="module")
def browser():
    with cdp.chromium() as devtools:
        yield devtools


# --------------------------------------------------------------------------- JupyterLab via CDP

JS_APP = r"""(async () => {
  const t0 = Date.now();
  while (!(window.jupyterapp && window.jupyterapp.commands)) {
    if (Date.now() - t0 > 120000) return 'window.jupyterapp never appeared';
    await new Promise(r => setTimeout(r, 100));
  }
  await window.jupyterapp.started;
  await window.jupyterapp.restored;
  window.__mb = {};
  return 'ok';
})()"""

# Open a notebook, wait for its kernel, remember the panel as window.__mb[key].
JS_OPEN = r"""(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const t0 = Date.now();
  const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open',
                                            {path: %(path)s, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  const kernel = () => panel.sessionContext.session && panel.sessionContext.session.kernel;
  while (!(kernel() && kernel().status === 'idle')) {
    if (Date.now() - t0 > 180000)
      return 'the kernel did not become idle: ' + (kernel() ? kernel().status : 'no kernel');
    await sleep(100);
  }
  const nb = {panel, busy: 0, runAll: null};
  kernel().statusChanged.connect((_, s) => { if (s === 'busy') nb.busy++; });
  window.__mb[%(key)s] = nb;
  return 'ok';
})()"""

# JupyterLab's own "Run All Cells" on the notebook; not awaited (it may take minutes).
JS_RUN_ALL = r"""(() => {
  const nb = window.__mb[%(key)s];
  window.jupyterapp.shell.activateById(nb.panel.id);
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
      r => { nb.runAll = {done: true, result: String(r)}; },
      e => { nb.runAll = {done: true, error: String(e)}; });
  return true;
})()"""

JS_RUN_STATE = r"""(() => {
  const nb = window.__mb[%(key)s];
  const kernel = nb.panel.sessionContext.session && nb.panel.sessionContext.session.kernel;
  let code = 0, executed = 0, pending = 0;
  const errors = [];
  nb.panel.content.widgets.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    code++;
    const prompt = (c.node.querySelector('.jp-InputPrompt') || {}).textContent || '';
    if (prompt.includes('*')) pending++;
    if (c.model.executionCount !== null && c.model.executionCount !== undefined) executed++;
    for (const o of c.model.outputs.toJSON())
      if (o.output_type === 'error')
        errors.push(`cell ${i}: ${o.ename}: ${String(o.evalue).slice(0, 300)}`);
  });
  return {status: kernel ? kernel.status : 'no kernel', busy: nb.busy, code, executed,
          pending, errors, runAll: nb.runAll};
})()"""

# Widgets that failed to render, anywhere in the notebook.
JS_DOM_ERRORS = r"""(() => {
  const out = [];
  const node = window.__mb[%(key)s].panel.content.node;
  for (const el of node.querySelectorAll('.jp-OutputArea-output'))
    if (/Error displaying widget|Failed to (load|create) (model|view)|Model not found/i
        .test(el.textContent)) out.push(el.textContent.trim().slice(0, 300));
  return out;
})()"""

JS_FIND_CELLS = r"""(() => {
  const re = new RegExp(%(pattern)s, 'm');
  const hits = [];
  window.__mb[%(key)s].panel.content.widgets.forEach((c, i) => {
    if (c.model.type === 'code' && re.test(c.model.sharedModel.getSource())) hits.push(i);
  });
  return hits;
})()"""

JS_CELL = "window.__mb[%(key)s].panel.content.widgets[%(index)d]"
JS_SLIDER = (JS_CELL + ".node.querySelector('.jp-OutputArea .widget-interact')"
             " && [...%(cell)s.node.querySelectorAll('.jp-OutputArea .widget-interact"
             " .widget-slider')].find(s => ((s.querySelector('.widget-label') || {}).textContent"
             " || '').includes(%(label)s))")

JS_WIDGET_STATE = r"""(async () => {
  const cell = %(cell)s;
  const root = cell.node.querySelector('.jp-OutputArea .widget-interact');
  if (!root) return {rendered: false,
                     text: (cell.node.querySelector('.jp-OutputArea') || {}).innerText};
  const sliders = [...root.querySelectorAll('.widget-slider')];
  const slider = %(slider)s;
  const handle = slider && slider.querySelector('.noUi-handle');
  const readout = slider && slider.querySelector('.widget-readout');
  const out = root.querySelector('.widget-output');
  const imgs = out ? [...out.querySelectorAll('img')] : [];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const errs = out ? [...out.querySelectorAll('.jp-OutputArea-output')]
      .filter(e => e.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr'
                   || /Traceback|Error/.test(e.textContent))
      .map(e => e.textContent.trim().slice(0, 300)) : [];
  return {rendered: true, found: !!slider, handle: !!handle,
          labels: sliders.map(s => (s.querySelector('.widget-label') || {}).textContent),
          readout: readout ? String(readout.value !== undefined ? readout.value
                                                         : readout.textContent).trim() : null,
          imgs: imgs.map(i => i.src), loaded: imgs.filter(i => i.naturalWidth > 0).length,
          errors: errs};
})()"""


class Notebook:
    """One notebook open in the JupyterLab page, addressed in JS as ``window.__mb[key]``."""

    def __init__(self, tab: cdp.Tab, lab: Lab, path: str, key: str):
        self.tab, self.lab, self.path, self.key = tab, lab, path, json.dumps(key)
        status = tab.js(JS_OPEN % {"path": json.dumps(path), "key": self.key},
                        timeout_ms=240000)
        assert status == "ok", f"opening {path} in JupyterLab: {status}\n{lab.log_tail()}"
        lab.note_children()
        self.t_run = None

    def js(self, template: str, **kw):
        return self.tab.js(template % dict(key=self.key, **kw))

    def activate(self) -> None:
        self.tab.js(f"window.jupyterapp.shell.activateById(window.__mb[{self.key}].panel.id)")
        self.tab.pump(0.3)

    def start_run_all(self) -> None:
        self.js(JS_RUN_ALL)
        self.t_run = time.monotonic()

    def wait_run_all(self, timeout: float) -> dict:
        """Wait until "Run All Cells" is done, the kernel idle and no cell shows ``[*]``."""
        while True:
            state = self.js(JS_RUN_STATE)
            if state["runAll"] and state["pending"] == 0 and state["status"] == "idle":
                state["seconds"] = time.monotonic() - self.t_run
                return state
            if time.monotonic() - self.t_run > timeout:
                raise AssertionError(f"{self.path} did not finish within {timeout:.0f} s: "
                                     f"{state}")
            self.tab.pump(1.0)

    def find_cells(self, pattern: str) -> list[int]:
        return self.js(JS_FIND_CELLS, pattern=json.dumps(pattern))

    def dom_errors(self) -> list[str]:
        return self.js(JS_DOM_ERRORS)

    # ---- the interactive widget in cell `index`, and its slider labelled SLIDER
    def _cell(self, index: int) -> str:
        return JS_CELL % {"key": self.key, "index": index}

    def _slider(self, index: int) -> str:
        return JS_SLIDER % {"key": self.key, "index": index, "cell": self._cell(index),
                            "label": json.dumps(SLIDER)}

    def widget(self, index: int) -> dict:
        state = self.tab.js(JS_WIDGET_STATE % {"cell": self._cell(index),
                                               "slider": self._slider(index)})
        if state.get("rendered"):
            # the plot's identity: a hash of the images' data (PNG data: URLs)
            state["plot"] = hashlib.sha256("\n".join(state.pop("imgs")).encode()).hexdigest()[:16]
        return state

    def wait_widget(self, index: int, timeout: float = 60) -> dict:
        t0 = time.monotonic()
        while True:
            state = self.widget(index)
            if state.get("rendered") and state.get("found") and state.get("loaded"):
                return state
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"the widget in cell {index} of {self.path} did not render "
                                     f"within {timeout:.0f} s: {state}")
            self.tab.pump(0.3)

    def busy(self) -> int:
        return self.tab.js(f"window.__mb[{self.key}].busy")

    def settle(self, index: int, busy_before: int, min_busy: int = 1, quiet: float = 10,
               timeout: float = 120) -> dict:
        """After an interaction: wait for the kernel to react and the widget to stop changing.

        Returns the widget's state once the kernel went busy (at least ``min_busy`` times:
        one per value the slider sent) and is idle again, and the widget has looked the same
        for 1.5 s with its plot loaded (or an error shown); or, if the kernel never went busy
        within ``quiet`` seconds, the state then (``reacted`` False).
        """
        t0 = time.monotonic()
        last, since = None, time.monotonic()
        while True:
            self.tab.pump(0.25)
            run = self.js(JS_RUN_STATE)
            state = self.widget(index)
            key = (state.get("plot"), state.get("readout"), state.get("loaded"))
            if key != last:
                last, since = key, time.monotonic()
            if run["busy"] - busy_before >= min_busy and run["status"] == "idle" \
                    and (state.get("loaded") or state.get("errors")) \
                    and time.monotonic() - since > 1.5:
                return dict(state, reacted=True)
            if run["busy"] == busy_before and time.monotonic() - t0 > quiet:
                return dict(state, reacted=False)
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"the widget did not settle within {timeout:.0f} s: "
                                     f"{state}")

    def press_slider(self, index: int, presses: int) -> tuple[dict, dict]:
        """Click the slider's handle, press ArrowRight ``presses`` times: (before, after)."""
        before = self.wait_widget(index)
        busy = self.busy()
        handle = f"({self._slider(index)}).querySelector('.noUi-handle')"
        self.tab.click(handle)
        self.tab.pump(0.3)
        assert self.tab.js(f"document.activeElement === {handle}"), \
            "clicking the slider's handle did not focus it"
        for _ in range(presses):
            self.tab.press("ArrowRight")
            self.tab.pump(0.1)
        return before, self.settle(index, busy, min_busy=presses)

    def drag_slider_to_end(self, index: int) -> tuple[dict, dict]:
        """Drag the slider's handle with the mouse past the right end of its track."""
        before = self.wait_widget(index)
        busy = self.busy()
        x0, y0 = self.tab.center(f"({self._slider(index)}).querySelector('.noUi-handle')")
        right = self.tab.js(f"({self._slider(index)}).querySelector('.noUi-target')"
                            ".getBoundingClientRect().right")
        self.tab.drag(x0, y0, right + 40, y0)
        return before, self.settle(index, busy)

    def shutdown_kernel(self) -> None:
        self.tab.js(f"window.__mb[{self.key}].panel.sessionContext.shutdown()")


@pytest.fixture(scope="module")
def page(lab, browser):
    """A Chromium tab with JupyterLab loaded (fresh workspace)."""
    tab = cdp.open_tab(browser)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tab.send(f"{domain}.enable")
        tab.send("Emulation.setDeviceMetricsOverride", width=cdp.VIEWPORT[0],
                 height=cdp.VIEWPORT[1], deviceScaleFactor=1, mobile=False)
        tab.send("Page.navigate", url=f"{lab.url}/lab/workspaces/metabook-test?reset"
                                      f"&token={lab.token}")
        tab.wait_for("Page.loadEventFired", timeout=120)
        status = tab.js(JS_APP, timeout_ms=150000)
        assert status == "ok", f"JupyterLab did not start in the browser: {status}"
        yield tab
    finally:
        cdp.close_tab(browser, tab)


@pytest.fixture(scope="module")
def ch03(lab, page):
    """Chapter 3, open, with "Run All Cells" started (it runs while the self-test runs)."""
    t0 = time.monotonic()
    nb = Notebook(page, lab, CH03.as_posix(), "ch03")
    nb.t_open = time.monotonic() - t0
    nb.start_run_all()
    return nb


def lab_problems(tab: cdp.Tab, lab: Lab) -> list[str]:
    """JS exceptions, console errors, requests to other hosts in the JupyterLab page."""
    return cdp.page_problems(tab, lab.url.split("/")[2])


# --------------------------------------------------------------------------- tests

def test_change_detector_bites(lab, page, ch03):
    """A slider whose callback redraws the same figure: readout changes, plot does not.

    Runs in the same page while chapter 3 computes in its own kernel.
    """
    nb = Notebook(page, lab, "selftest.ipynb", "selftest")
    nb.activate()
    nb.start_run_all()
    state = nb.wait_run_all(timeout=180)
    assert not state["errors"] and state["executed"] == state["code"] == 1, state
    [index] = nb.find_cells(r"widgets\.interactive\(")
    before, after = nb.press_slider(index, presses=2)
    assert after["reacted"], "the kernel never reacted to the slider"
    assert (before["readout"], after["readout"]) == ("1", "3"), (before, after)
    assert after["plot"] == before["plot"], \
        "the change detector says the plot changed, but this callback draws the same figure"
    nb.shutdown_kernel()
    problems = lab_problems(page, lab)
    assert not problems, "\n".join(problems)


def test_ch03_adaptation_widget_in_jupyterlab(lab, page, ch03):
    problems: list[str] = []
    state = ch03.wait_run_all(timeout=RUN_TIMEOUT)
    print(f"\nch03 in JupyterLab: opened in {ch03.t_open:.0f} s, ran {state['executed']}/"
          f"{state['code']} code cells in {state['seconds']:.0f} s")
    problems += [f"error output: {e}" for e in state["errors"]]
    if not state["errors"] and state["executed"] != state["code"]:
        problems.append(f"only {state['executed']} of {state['code']} code cells ran "
                        f"(run-all: {state['runAll']})")
    ch03.activate()

    hits = ch03.find_cells(WIDGET_CALL)
    assert len(hits) == 1, f"expected one cell calling adaptation_widget(...), found {hits}"
    index = hits[0]
    first = ch03.wait_widget(index)
    assert len(first["labels"]) == 6, f"expected six sliders, got {first['labels']}"
    assert first["handle"], "the steps slider has no handle"

    # keyboard: click the handle, ArrowRight twice: steps 1 -> 3
    before, after = ch03.press_slider(index, presses=2)
    print(f"keys: readout {before['readout']} -> {after['readout']}, "
          f"plot {before['plot']} -> {after['plot']}")
    if (before["readout"], after["readout"]) != ("1", "3"):
        problems.append(f"ArrowRight x2 on the steps slider: readout {before['readout']!r} -> "
                        f"{after['readout']!r}, expected 1 -> 3")
    if not after["reacted"]:
        problems.append("the kernel never reacted to the steps slider")
    if after["plot"] == before["plot"]:
        problems.append("moving the steps slider did not change the plot")
    if after["loaded"] != 1:
        problems.append(f"after the key presses the widget shows {after['loaded']} plots")

    # mouse: drag the handle to the end of the track: steps 10
    before2, after2 = ch03.drag_slider_to_end(index)
    print(f"drag: readout {before2['readout']} -> {after2['readout']}, "
          f"plot {before2['plot']} -> {after2['plot']}")
    if after2["readout"] != "10":
        problems.append(f"dragging the steps slider to the end: readout "
                        f"{before2['readout']!r} -> {after2['readout']!r}, expected 10")
    if after2["plot"] in (before2["plot"], before["plot"]):
        problems.append("dragging the steps slider did not change the plot")
    for s in (after, after2):
        problems += [f"error in the widget's output: {e}" for e in s["errors"]]

    problems += [f"in the notebook: {e}" for e in ch03.dom_errors()]
    problems += lab_problems(page, lab)
    assert not problems, "chapter 3 in JupyterLab:\n  " + "\n  ".join(problems)
