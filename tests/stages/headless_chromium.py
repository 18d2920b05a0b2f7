"""Open a page in headless Chromium and report what a person would see: which images loaded, what the console
said, and a screenshot. Driven through the DevTools protocol (websocket-client), no browser-automation package.

Chromium is Debian's `chromium`, installed by hack/testbed/browser-deps.sh (`make browser-deps`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[2]
BROWSER_DEPS = REPO / "hack" / "testbed" / "browser-deps.sh"

# What every <img> of the page is once loading has settled (naturalWidth is 0 for an image that failed).
IMAGES_SCRIPT = """JSON.stringify(Array.from(document.images, img => ({
    src: img.getAttribute('src'), url: img.src, complete: img.complete, naturalWidth: img.naturalWidth})))"""


def find_or_install_chromium() -> str:
    """The chromium executable; installs Debian's package (idempotently, as `make browser-deps`) if missing."""
    found = shutil.which("chromium")
    if found is None:
        proc = subprocess.run([str(BROWSER_DEPS)], capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium")
        if found is None:
            raise RuntimeError(f"no chromium, and {BROWSER_DEPS} could not install it:\n{proc.stderr[-2000:]}")
    return found


@dataclass
class PageReport:
    images: list[dict]
    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and failed loads (Chromium logs those as errors too)."""


class HeadlessChromium:
    """`with HeadlessChromium(exe) as browser: report = browser.open(url); browser.screenshot(path)`."""

    def __init__(self, executable: str, timeout_s: float = 60.0):
        self.executable, self.timeout_s = executable, timeout_s
        self._next_id = 0
        self._errors: list[str] = []

    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.mkdtemp(prefix="mousflow-chromium-")
        # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
        self._proc = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self._profile}",
             "--window-size=1280,1024", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._wait_for_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout_s,
                                               suppress_origin=True)
        for domain in ("Page", "Runtime", "Log"):
            self._call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._ws.close()
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            shutil.rmtree(self._profile, ignore_errors=True)

    def _wait_for_port(self) -> int:
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._proc.returncode}")
            if active.exists() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _call(self, method: str, until_event: str | None = None, **params) -> dict:
        """Send one command; return its result once it (and `until_event`, if given) has arrived."""
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        result, event_seen = None, until_event is None
        while result is None or not event_seen:
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message["result"]
            elif message.get("method") == until_event:
                event_seen = True
            else:
                self._note(message)
        return result

    def _note(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self._errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                       for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self._errors.append(f"exception: {details.get('exception', {}).get('description', details)}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self._errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    def open(self, url: str) -> PageReport:
        """Load `url`, wait for its load event (every image settled), report its images and errors."""
        self._errors = []
        self._call("Page.navigate", until_event="Page.loadEventFired", url=url)
        value = self._call("Runtime.evaluate", expression=IMAGES_SCRIPT, returnByValue=True)["result"]["value"]
        return PageReport(images=json.loads(value), errors=list(self._errors))

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the window) as a PNG at `path`."""
        shot = self._call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def artifacts_dir(name: str) -> Path:
    """Where a test keeps what a person may want to look at afterwards: .artifacts/<name> (ignored by git)."""
    path = Path(os.environ.get("MOUSFLOW_TEST_ARTIFACTS", REPO / ".artifacts")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
