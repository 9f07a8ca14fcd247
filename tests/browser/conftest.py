"""One live service and one headless Chromium for every browser test (session-scoped, so the
suite pays for start-up once).

The service runs as users run it (`python -m service` under uvicorn) on a free 127.0.0.1 port,
on the committed `model_store/` bundles, with an API key and a small file limit so that the page's
"API key needed" and 413 paths can be driven. Chromium is Debian's (`chromium`, `chromium-driver`;
`.ci/run` installs them); without them the tests skip and say so. Screenshots go to
tests/browser/screenshots/ (git-ignored).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import DATA_DIR, REPO_ROOT, SUBPROCESS_PYTHONPATH
from tests.service.test_live import free_port, wait_for

API_KEY = "browser-test-key-0123456789abcdef"
MAX_FILES = 4
SLIDE_NAME = "ebhi_browser.tiff"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _skip_reason() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return ("Debian's chromium and chromium-driver are not installed "
                "(apt-get install chromium chromium-driver; .ci/run does this)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def _slide_root(tmp_path_factory) -> Path:
    """HISTOSERVE_SLIDE_ROOT for the service: one small pyramidal TIFF of real EBHI tiles on glass, when the
    data and tifffile are there (the slide test skips otherwise)."""
    root = tmp_path_factory.mktemp("browser-slides")
    if not (DATA_DIR / "ebhi_seg").is_dir():
        return root
    try:
        import imagecodecs  # noqa: F401
        import tifffile  # noqa: F401

        from tests.service.slides.conftest import EBHI_CELLS, _real_tiles, place, write_pyramid
    except ImportError:
        return root
    import numpy as np

    # 6 x 4 cells of 224 px at 1.2 um/px (the EBHI estimate), three of them real tissue: a few seconds' job.
    cells = EBHI_CELLS[:3]
    canvas = np.full((4 * 224, 6 * 224, 3), 255, dtype=np.uint8)
    place(canvas, _real_tiles(DATA_DIR / "ebhi_seg", len(cells), (224, 224)), cells, 224, 224)
    write_pyramid(root / SLIDE_NAME, canvas, mpp=1.2)
    return root


@pytest.fixture(scope="session")
def live_service(tmp_path_factory):
    """`python -m service` on the committed bundles; yields its base URL, port, log path and slide root."""
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    port = free_port()
    slide_root = _slide_root(tmp_path_factory)
    log_path = tmp_path_factory.mktemp("browser-service") / "service.log"
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "HISTOSERVE_HOST": "127.0.0.1", "HISTOSERVE_PORT": str(port),
           "HISTOSERVE_MODEL_STORE": str(REPO_ROOT / "model_store"),
           "HISTOSERVE_STATE_DIR": str(tmp_path_factory.mktemp("browser-state")),
           "HISTOSERVE_API_KEY": API_KEY, "HISTOSERVE_MAX_FILES": str(MAX_FILES),
           "HISTOSERVE_SLIDE_ROOT": str(slide_root),
           "HISTOSERVE_INTRA_OP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            # Generous: start-up is seconds on an idle machine, minutes beside a training on 2 cores.
            wait_for(f"http://127.0.0.1:{port}/readyz", proc, timeout=300)
            yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": log_path, "slide_root": slide_root}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class NetworkLog:
    """Every request the page made, from Chromium's performance log (Network.requestWillBeSent)."""

    def __init__(self, driver, origin: str):
        self.driver = driver
        self.origin = origin
        self.urls: list[str] = []

    def drain(self) -> list[str]:
        new = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                new.append(message["params"]["request"]["url"])
        self.urls += new
        return new

    def outside(self) -> list[str]:
        """Requests to anything but the service (data: and blob: URLs are made in the page itself)."""
        self.drain()
        service = urlsplit(self.origin)
        bad = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob"):
                continue
            if (parts.scheme, parts.hostname, parts.port) != (service.scheme, service.hostname, service.port):
                bad.append(url)
        return bad


@pytest.fixture(scope="session")
def browser(live_service):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--metrics-recording-only",
                "--disable-features=MediaRouter,OptimizationHints,Translate"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.network_log = NetworkLog(driver, live_service["url"])
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def page(browser, live_service):
    """The viewer at `/`, loaded fresh and ready (models and adapters listed)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_service["url"] + "/")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") is not None)
    assert browser.execute_script("return document.body.dataset.ready") == "1", \
        browser.find_element("id", "classify-message").text
    return browser


@pytest.fixture()
def api(live_service):
    with httpx.Client(base_url=live_service["url"], timeout=30.0) as client:
        yield client


def screenshot(driver, name: str) -> Path:
    """A full-page PNG under tests/browser/screenshots/ (the window grows to the page's height)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 800), 5000))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.2)  # let the layout settle at the new size before capturing
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path
