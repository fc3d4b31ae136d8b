"""Opens `pipeline report` pages in headless Chromium over the DevTools protocol and checks
what a reader would see: no console errors, no uncaught exceptions, no resource that failed to
load, every figure decoded, and a full-page screenshot that is not blank.

    check_report.py OUT_DIR REPORT.html [REPORT.html ...]

Writes OUT_DIR/<report's folder>.png (the screenshot) and prints one line per report; exits 1
when any check fails.
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket
from PIL import Image

WIDTH = 1280


class Page:
    """One browser tab, driven by DevTools commands; events are kept as they arrive."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events = []

    def call(self, method, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(e.get("method") == method for e in self.events):
                return True
            self.ws.settimeout(max(0.1, end - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        return any(e.get("method") == method for e in self.events)

    def drain(self, seconds):
        """Collects events for a while after load (late console messages, image decodes)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break


def launch(chromium, profile):
    args = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = Path(profile) / "DevToolsActivePort"
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        if proc.poll() is not None:
            sys.exit(f"chromium exited with {proc.returncode} before it listened")
        time.sleep(0.1)
    proc.kill()
    sys.exit("chromium did not open its DevTools port in 30 s")


def problems_of(events):
    """Console errors, uncaught exceptions and failed loads among the page's events."""
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            out.append(f"console.{p['type']}: {text}")
        elif m == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} ({p['entry'].get('url', '')})")
        elif m == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


def blank_reason(png):
    """Why a screenshot counts as blank, or None: almost all one colour, or too few colours."""
    img = Image.open(png).convert("RGB")
    small = img.resize((max(1, img.width // 4), max(1, img.height // 4)))
    colors = small.getcolors(maxcolors=1 << 20) or []
    total = small.width * small.height
    top = max((c for c, _ in colors), default=total)
    if top > 0.995 * total:
        return f"{100 * top / total:.2f}% of it is one colour"
    if len(colors) < 16:
        return f"only {len(colors)} colours"
    return None


def check(chromium, html, shot):
    profile = tempfile.mkdtemp(prefix="pipeline-report-check-")
    proc, ws_url = launch(chromium, profile)
    try:
        page = Page(ws_url)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=900,
                  deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=html.resolve().as_uri())
        if not page.wait_for("Page.loadEventFired", 60):
            return ["the page did not finish loading in 60 s"], None
        page.drain(1.0)
        problems = problems_of(page.events)
        broken = page.call("Runtime.evaluate", returnByValue=True, expression=(
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.getAttribute('src'))"))["result"]["value"]
        problems += [f"figure not shown: {src}" for src in broken]
        height = page.call("Runtime.evaluate", returnByValue=True,
                           expression="document.documentElement.scrollHeight")["result"]["value"]
        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=min(height, 16000),
                  deviceScaleFactor=1, mobile=False)
        data = page.call("Page.captureScreenshot", format="png")["data"]
        shot.write_bytes(base64.b64decode(data))
        if (why := blank_reason(shot)) is not None:
            problems.append(f"screenshot is blank: {why}")
        figures = page.call("Runtime.evaluate", returnByValue=True,
                            expression="document.images.length")["result"]["value"]
        return problems, (height, figures)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (Debian: apt-get install chromium)")
    failed = 0
    for arg in sys.argv[2:]:
        html = Path(arg)
        shot = out / f"{html.resolve().parent.name}.png"
        problems, seen = check(chromium, html, shot)
        if problems:
            failed += 1
            print(f"FAIL {html}:")
            for p in problems:
                print(f"  {p}")
        else:
            height, figures = seen
            print(f"ok   {html}: {figures} figures shown, no console errors, "
                  f"screenshot {WIDTH}x{height} px -> {shot}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
