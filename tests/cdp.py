"""A small Chrome DevTools protocol toolkit for the browser tests.

Headless Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``) is started with a fresh profile and
``--remote-debugging-port=0``; its port is read from ``DevToolsActivePort``. Pages are driven
over the DevTools websocket with ``websocket-client``: evaluate JavaScript, dispatch real mouse
and keyboard events, collect console/network events. Same approach as
``tests/test_book_browser.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

try:
    import websocket  # websocket-client
except ImportError as exc:  # pragma: no cover - a missing dependency must fail, not skip
    raise ImportError("the browser tests need `pip install websocket-client`") from exc

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = (1280, 900)


class CDPError(RuntimeError):
    pass


class Tab:
    """A minimal Chrome DevTools protocol client for one page target."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._id = 0
        self.events: list[dict] = []
        self.target_id = ""

    def close(self) -> None:
        self.ws.close()

    def _recv(self) -> dict:
        msg = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
        return msg

    def send(self, method: str, **params):
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        seen = len(self.events)
        for ev in self.events:
            if ev["method"] == method:
                return ev
        deadline = time.monotonic() + timeout
        self.ws.settimeout(1.0)
        try:
            while time.monotonic() < deadline:
                try:
                    self._recv()
                except websocket.WebSocketTimeoutException:
                    continue
                for ev in self.events[seen:]:
                    if ev["method"] == method:
                        return ev
                seen = len(self.events)
        finally:
            self.ws.settimeout(30.0)
        raise TimeoutError(f"no {method} within {timeout} s")

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        self.ws.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    self._recv()
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.ws.settimeout(30.0)

    def js(self, expression: str, timeout_ms: int = 30000):
        """Evaluate ``expression`` in the page (promises awaited); return its JSON value."""
        self.ws.settimeout(timeout_ms / 1000 + 30)
        try:
            res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=True, timeout=timeout_ms)
        finally:
            self.ws.settimeout(30.0)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JS error in test script: {text}")
        return res["result"].get("value")

    def center(self, element_js: str) -> tuple[float, float]:
        """Scroll an element into view; return its centre in viewport coordinates."""
        x, y = self.js(f"""(() => {{
            const el = {element_js};
            el.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()""")
        return x, y

    def click(self, element_js: str) -> None:
        """Scroll an element into view and click its centre with real mouse events."""
        x, y = self.center(element_js)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8) -> None:
        """Press the left button at (x0, y0), move to (x1, y1) in ``steps``, release."""
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0,
                  button="left", buttons=1, clickCount=1)
        for i in range(1, steps + 1):
            self.send("Input.dispatchMouseEvent", type="mouseMoved", button="left", buttons=1,
                      x=x0 + (x1 - x0) * i / steps, y=y0 + (y1 - y0) * i / steps)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1,
                  button="left", buttons=0, clickCount=1)

    KEYS = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowUp": 38, "ArrowDown": 40,
            "Home": 36, "End": 35, "Enter": 13, "Escape": 27}

    def press(self, key: str) -> None:
        """A real key press (keyDown + keyUp) sent to the focused element."""
        code = self.KEYS[key]
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)


@contextmanager
def chromium(extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start headless Chromium with a fresh profile; yield its DevTools HTTP endpoint.

    Fails (never skips) when Chromium is missing. Chromium is stopped by its process id
    (terminate, then kill) and its profile removed on exit.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                    "(or set $CHROMIUM)", pytrace=False)
    profile = tempfile.mkdtemp(prefix="metabook-chromium-")
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", *extra_args,
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
                pytest.fail(f"Chromium did not start: {err[-2000:]}", pytrace=False)
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        # Chromium's helper processes may still write to the profile for a moment
        for _ in range(20):
            shutil.rmtree(profile, ignore_errors=True)
            if not os.path.exists(profile):
                break
            time.sleep(0.25)


def open_tab(devtools: str) -> Tab:
    req = urllib.request.Request(f"{devtools}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        target = json.load(r)
    tab = Tab(target["webSocketDebuggerUrl"])
    tab.target_id = target["id"]
    return tab


def close_tab(devtools: str, tab: Tab) -> None:
    tab.close()
    try:
        urllib.request.urlopen(f"{devtools}/json/close/{tab.target_id}", timeout=10).read()
    except OSError:
        pass


def page_problems(tab: Tab, host: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """JS exceptions, console errors and requests to hosts other than ``host`` seen so far.

    ``ignore``: substrings of messages that are not problems.
    """
    problems = []
    for ev in tab.events:
        m, p = ev["method"], ev.get("params", {})
        msg = None
        if m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if url.startswith(("http://", "https://", "ws://", "wss://")) \
                    and url.split("/")[2] != host:
                msg = f"request to another host: {url[:150]}"
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            msg = f"JS exception: {str(text)[:300]}"
        elif m == "Runtime.consoleAPICalled" and p["type"] == "error":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            msg = f"console.error: {args[:300]}"
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            e = p["entry"]
            msg = f"console error ({e.get('source')}): {e.get('text', '')[:200]} {e.get('url', '')}"
        if msg and not any(s in msg for s in ignore):
            problems.append(msg)
    return problems
