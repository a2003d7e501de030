"""A minimal headless-Chromium driver over the DevTools protocol (websocket-client only).

    with Chromium.launch(find_chromium(), tmp_dir) as browser:
        page = browser.open(path)          # waits for the load event and every image
        page.value                         # what PAGE_PROBE found in the page
        page.errors                        # console errors, exceptions, failed loads
        browser.screenshot(path_png)       # the whole page (capped in height)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Waits for every image to settle (loaded or failed), then reports what the tests check.
PAGE_PROBE = """
(async () => {
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  return {
    title: document.title,
    images: [...document.images].map(img => ({src: img.getAttribute('src'), complete: img.complete,
                                                width: img.naturalWidth})),
    verdictRows: document.querySelectorAll('#verdict-table tbody tr').length,
    modelColumns: document.querySelectorAll('#model-table thead th').length,
    claimRows: document.querySelectorAll('#model-table tbody tr').length,
    scripts: document.scripts.length,
  };
})()
"""


def find_chromium() -> str | None:
    """``$CHROMIUM`` or the first Chromium/Chrome binary on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class Page:
    url: str
    value: dict
    errors: list[str] = field(default_factory=list)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium process and one page of it, driven over CDP."""

    def __init__(self, process: subprocess.Popen, ws, log_path: Path):
        self.process, self.ws, self.log_path = process, ws, log_path
        self._next_id = 0
        self.events: list[dict] = []

    # ------------------------------------------------------------------ start / stop

    @classmethod
    def launch(cls, binary: str, workdir: Path, timeout: float = 30.0) -> Chromium:
        import websocket  # websocket-client

        workdir = Path(workdir)
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "chromium.log"
        args = [
            binary, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
            "--window-size=1280,1000", "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        try:
            while not (port_file.is_file() and port_file.read_text().strip()):
                if process.poll() is not None:
                    raise BrowserError(f"Chromium exited with {process.returncode}: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise BrowserError(f"Chromium did not open its DevTools port in {timeout:.0f} s: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            targets = []
            while not targets:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    targets = [t for t in json.load(response) if t.get("type") == "page"]
                if not targets:
                    if time.monotonic() > deadline:
                        raise BrowserError("Chromium opened no page.")
                    time.sleep(0.05)
            ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        except BaseException:
            cls._stop(process)
            raise
        browser = cls(process, ws, log_path)
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        return browser

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self._stop(self.process)

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> Chromium:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "id" not in message:
            self.events.append(message)
        return message

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, event: str, since: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events[since:]:
                if e.get("method") == event:
                    return e
            since = len(self.events)
            if time.monotonic() > deadline:
                raise BrowserError(f"no {event} within {timeout:.0f} s")
            self._receive()

    # ------------------------------------------------------------------ pages

    def open(self, path: Path, timeout: float = 30.0) -> Page:
        """Load a local file, wait for it (and its images), and probe it."""
        url = Path(path).resolve().as_uri()
        start = len(self.events)
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired", start, timeout)
        value = self.evaluate(PAGE_PROBE)
        return Page(url, value, self.errors(since=start))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self, since: int = 0) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a failed load)."""
        found = []
        for e in self.events[since:]:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, path: Path, max_pixels: int = 16000) -> Path:
        """The whole page as a PNG, scaled down when it is taller than ``max_pixels``."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, height = max(1, size["width"]), max(1, size["height"])
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": min(1.0, max_pixels / height)}
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
