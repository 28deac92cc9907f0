# SPDX-License-Identifier: Apache-2.0
"""End to end in a real browser: start the app on a local port, screenshot it with headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from medkd.app import DISCLAIMER

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package chromium; `make test` "
                                                "installs it with apt when it can)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture
def served_app(models_dir, tmp_path):
    port = _free_port()
    env = dict(os.environ, MEDKD_MODELS=str(models_dir), PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"))
    try:
        _wait_healthy(port, server)
        yield f"http://127.0.0.1:{port}/?demo=1"
    finally:
        server.kill()
        server.wait(timeout=30)


def test_app_renders_the_viewer_in_chromium(served_app, tmp_path):
    from chromium_cdp import capture
    from PIL import Image

    shot = tmp_path / "app.png"
    text = capture(CHROMIUM, served_app, tmp_path / "profile", wait_for="Volumes per label", png=shot)
    assert DISCLAIMER in text
    assert "axial" in text and "Mask (NIfTI)" in text and "RV" in text  # the viewer, not an error page
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1500, 1400) and pixels.std() > 10  # not a blank page
    # the overlay is drawn: pixels with the RV label colour blended at 50% over grey are on the page
    rv = np.array([230, 25, 75], dtype=float)
    reddish = (pixels[..., 0].astype(int) - pixels[..., 1].astype(int) > 60) & (pixels[..., 0] > 120)
    assert reddish.sum() > 50, "no label overlay visible in the screenshot"
    assert np.abs(pixels[reddish].mean(axis=0) - rv).max() < 130
    artifacts = os.environ.get("MEDKD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "app.png")
