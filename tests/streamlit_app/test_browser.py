# SPDX-License-Identifier: Apache-2.0
"""End to end in a real browser: start the app on a local port, drive headless Chromium with Selenium (Debian's
``chromium`` and ``chromium-driver``), check the disclaimer in the DOM and screenshot the viewer.

Streamlit renders from websocket messages, so ``chromium --screenshot`` alone races the server: the page text is
polled (``WebDriverWait``) until the viewer is drawn and Streamlit's "Running..." widget is gone.
"""

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
CHROMEDRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if Path(p).is_file()), None
)
WIDTH, HEIGHT = 1400, 1500
#: the flags of the deployment spec (section 3), plus /dev/shm off for small containers
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--disable-dev-shm-usage",
                  f"--window-size={WIDTH},{HEIGHT}")  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package chromium; `make test` "
                                                "installs it with apt when it can)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver not installed (Debian package chromium-driver; "
                                                    "`make install` installs it with apt when it can)"),
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


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium under chromedriver (no Selenium Manager: both binaries are given), with a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=subprocess.DEVNULL))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()


def _drawn(driver, text: str) -> bool:
    """``text`` is on the page and Streamlit is not running the script any more."""
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body").text
    return text in body and not driver.find_elements(By.CSS_SELECTOR, "[data-testid=stStatusWidget]")


def test_app_renders_the_viewer_in_chromium(served_app, browser, tmp_path):
    from PIL import Image
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served_app)
    try:
        WebDriverWait(browser, 120, poll_frequency=0.5).until(lambda d: _drawn(d, "Volumes per label"))
    except TimeoutException:
        page = browser.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the viewer did not appear within 120 s; page text: {page[-800:]!r}")
    time.sleep(1.0)  # let images decode and the layout settle
    text = browser.find_element(By.TAG_NAME, "body").text
    assert DISCLAIMER in text and DISCLAIMER in browser.page_source  # shown, and in the DOM
    assert "axial" in text and "Mask (NIfTI)" in text and "RV" in text  # the viewer, not an error page
    shot = tmp_path / "app.png"
    shot.write_bytes(browser.get_screenshot_as_png())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (HEIGHT, WIDTH) and pixels.std() > 10  # not a blank page
    # the overlay is drawn: pixels with the RV label colour blended at 50% over grey are on the page
    rv = np.array([230, 25, 75], dtype=float)
    reddish = (pixels[..., 0].astype(int) - pixels[..., 1].astype(int) > 60) & (pixels[..., 0] > 120)
    assert reddish.sum() > 50, "no label overlay visible in the screenshot"
    assert np.abs(pixels[reddish].mean(axis=0) - rv).max() < 130
    artifacts = os.environ.get("MEDKD_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "app.png")
