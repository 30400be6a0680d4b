"""Notebook 06 in a real browser: JupyterLab headless on localhost, Debian's Chromium driven by
Selenium (with Debian's chromedriver; no test tool downloads a browser or a driver).

The test opens notebooks/06_interactive.ipynb, runs every cell from JupyterLab's Run menu,
moves the alpha_m slider with the keyboard, clicks Generate, and waits until the app's status
line reports an image generated at the new alpha_m. It saves a screenshot to
runs/test-browser/06_interactive.png.

Run it alone with ``.venv/bin/python -m pytest tests/test_browser.py`` (needs ``chromium`` and
``chromium-driver`` from Debian, installed by ``.ci/run`` or ``make browser-deps``). It is
skipped, saying why, where Chromium or chromedriver is missing, unless DRC_REQUIRE_BROWSER=1
(as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "test-browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    if not (CHROMIUM and CHROMEDRIVER):
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    if not (REPO / "notebooks" / "06_interactive.ipynb").is_file():
        pytest.skip("notebook 06 does not exist yet")
    why = _missing()
    if why:
        if os.environ.get("DRC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but: {why}")
        pytest.skip(why)
    port, token = _free_port(), uuid.uuid4().hex
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(OUT / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(OUT / "jupyter-runtime"))
    log = open(OUT / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}", "--allow-root",
                             "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=None",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"JupyterLab did not start; see {OUT / 'jupyterlab.log'}")
    yield f"http://127.0.0.1:{port}", token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_notebook_06_generates_in_a_real_browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    base, token = lab
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400",
                "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    shot = OUT / "06_interactive.png"
    try:
        driver.get(f"{base}/lab/tree/notebooks/06_interactive.ipynb?token={token}")
        wait = WebDriverWait(driver, 180)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator, "
                                                                    ".jp-KernelStatus, .jp-Toolbar")))
        time.sleep(3)                                           # let the kernel connect
        # Run > Run All Cells, through JupyterLab's own menu
        menu = wait.until(EC.element_to_be_clickable((By.XPATH, "//li[contains(@class,'lm-MenuBar-item')]"
                                                                "[.//div[text()='Run']]")))
        menu.click()
        item = wait.until(EC.element_to_be_clickable((By.XPATH, "//li[contains(@class,'lm-Menu-item')]"
                                                                "[.//div[text()='Run All Cells']]")))
        item.click()
        long_wait = WebDriverWait(driver, 600)
        button = long_wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Generate']")))
        # wait until every cell has run (the last cell prints 'wrote ...')
        long_wait.until(lambda d: "06_interactive.json" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text)
        slider = driver.find_element(By.XPATH, "//div[contains(@class,'widget-slider')]"
                                               "[.//label[contains(., 'alpha_m')]]")
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        before = readout.text
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        handle.click()
        handle.send_keys(Keys.ARROW_RIGHT)
        long_wait.until(lambda d: readout.text != before)
        after = float(readout.text)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        long_wait.until(lambda d: f"generated with alpha_m {after:.2f}" in d.find_element(
            By.CSS_SELECTOR, ".jp-Notebook").text)
        images = driver.find_elements(By.CSS_SELECTOR, ".widget-image")
        assert any((img.get_attribute("src") or "").startswith(("data:image/png", "blob:")) for img in images)
        app_top = driver.find_element(By.XPATH, "//div[contains(@class,'widget-dropdown')][.//label[text()='user']]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", app_top)
        time.sleep(1)
    finally:
        OUT.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        driver.quit()
    assert shot.is_file() and shot.stat().st_size > 10_000
