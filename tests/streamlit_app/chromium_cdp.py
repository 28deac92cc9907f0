# SPDX-License-Identifier: Apache-2.0
"""Drive headless Chromium over the DevTools protocol: open a page, wait until its text shows, screenshot it.

``chromium --screenshot`` cannot wait for Streamlit: the app renders from websocket messages, and
``--virtual-time-budget`` races ahead while the server is still running the script. Here the page's own
``innerText`` is polled (real time) before the screenshot.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

__all__ = ["capture"]


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        time.sleep(0.2)
    raise TimeoutError("chromium did not open its DevTools port")


def capture(
    chromium: str, url: str, profile: Path, *, wait_for: str, png: Path | None = None, width: int = 1400,
    height: int = 1500, timeout: float = 120.0,
) -> str:
    """Load ``url``; once ``wait_for`` is in the page text (and rendering settled), return the text; save a PNG.

    Raises:
        TimeoutError: the text did not appear in time (the last text seen is in the message).
    """
    from websockets.sync.client import connect

    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size={width},{height}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port = _devtools_port(profile, process, 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            counter = iter(range(1, 1 << 30))

            def call(method: str, **params: object) -> dict:
                ident = next(counter)
                ws.send(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv(timeout=timeout))
                    if message.get("id") == ident:
                        return message.get("result", {})

            call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            deadline, text = time.time() + timeout, ""
            while time.time() < deadline:
                result = call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
                text = result.get("result", {}).get("value", "") or ""
                busy = "!!document.querySelector('[data-testid=stStatusWidget]')"  # Streamlit's "Running..." widget
                running = call("Runtime.evaluate", expression=busy)
                if wait_for in text and not running.get("result", {}).get("value", False):
                    break
                time.sleep(0.5)
            else:
                raise TimeoutError(f"'{wait_for}' did not appear within {timeout:.0f} s; page text: {text[-800:]!r}")
            time.sleep(1.0)  # let images decode and the layout settle
            if png is not None:
                shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
                png.write_bytes(base64.b64decode(shot["data"]))
            return text
    finally:
        process.kill()
        process.wait(timeout=30)
