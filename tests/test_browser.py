"""The training-trace viewer as a person sees it: JupyterLab in headless Chromium runs a notebook,
the widget renders, the epoch slider moves, and the picture changes.

JupyterLab runs from the repository root on 127.0.0.1 with a free port, no token, and temporary
config, data, runtime and IPython folders, serving a temporary copy of tests/notebooks/ (so a save
or autosave never writes outputs into the committed notebook). A screenshot is saved under
test-artifacts/. Chromium is Debian's /usr/bin/chromium, driven by Playwright's Python client
(never `playwright install`); without it the test is skipped.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mrcnn_course.training.training_trace import TrainingTrace

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT_S = 90  # JupyterLab's first start builds nothing but may be slow on 2 busy cores
WIDGET_TIMEOUT_MS = 90_000  # kernel start, imports (torch), and the first drawing

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"Chromium is not installed at {CHROMIUM} (CI installs Debian's chromium package via .ci/run)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Ask JupyterLab to stop (it shuts its kernels down), then kill its process group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a copy of tests/notebooks: yields its base URL; always stopped."""
    served = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, served)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    for name in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_RUNTIME_DIR",
        "IPYTHONDIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
    ):
        env[name] = str(tmp_path / name.lower())
    news = (
        tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    )
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast over the screenshot
    port = free_port()
    log = (tmp_path / "jupyterlab.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--LabApp.expose_app_in_browser=True",
            f"--ServerApp.root_dir={served}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],  # containers, CI
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # own group: stop() kills all
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        stop(process)
        log.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1100})
        finally:
            browser.close()


def test_training_viewer_renders_and_follows_the_slider(jupyterlab, page):
    epochs = len(TrainingTrace.load(NOTEBOOKS / "training_trace.json").epochs)
    assert epochs >= 2, "the notebook's trace needs two epochs or more to move between"
    page.goto(f"{jupyterlab}/lab/tree/training_viewer.ipynb")
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel", timeout=WIDGET_TIMEOUT_MS
    )
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=WIDGET_TIMEOUT_MS,
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    viewer = page.locator(".jp-OutputArea-output .widget-vbox").first
    viewer.locator(".widget-slider").wait_for(timeout=WIDGET_TIMEOUT_MS)
    summary = viewer.locator(".widget-html").first
    summary.filter(has_text=f"epoch {epochs} of {epochs}").wait_for(timeout=WIDGET_TIMEOUT_MS)  # opens at the end
    pictures = viewer.locator("img")
    assert pictures.count() == 2  # the curves and the predictions
    page.wait_for_function(
        "els => els.every(img => img.complete && img.naturalWidth > 0)", arg=pictures.element_handles()
    )
    assert page.get_by_text("Error displaying widget").count() == 0
    assert f"Epoch {epochs}:" in viewer.inner_text()
    curves_before = pictures.nth(0).get_attribute("src")
    predictions_before = pictures.nth(1).screenshot()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "training_viewer_last_epoch.png", full_page=True)

    handle = viewer.locator(".widget-slider .noUi-handle").first  # ipywidgets 8's slider (noUiSlider)
    handle.focus()
    page.keyboard.press("Home")  # the first epoch, as a person would with the keyboard
    summary.filter(has_text=f"epoch 1 of {epochs}").wait_for(timeout=WIDGET_TIMEOUT_MS)  # the viewer updates it last
    page.wait_for_function(
        "([img, before]) => img.src !== before && img.complete && img.naturalWidth > 0",
        arg=[pictures.nth(0).element_handle(), curves_before],
    )
    assert "Epoch 1:" in viewer.inner_text() and f"Epoch {epochs}:" not in viewer.inner_text()
    assert pictures.nth(1).screenshot() != predictions_before  # the predictions changed with the epoch
    assert page.get_by_text("Error displaying widget").count() == 0
    page.screenshot(path=ARTIFACTS / "training_viewer_first_epoch.png", full_page=True)
