"""The course as a person sees it, in JupyterLab in headless Chromium:
- the training-trace viewer: the widget renders, the epoch slider moves, and the picture changes;
- lessons 00, 03 and 04 run from the top: every cell runs without an error, every picture and
  explorer shows (no "Error displaying widget"), and screenshots of them are saved to look at.

JupyterLab runs from the repository root on 127.0.0.1 with a free port, no token, and temporary
config, data, runtime and IPython folders, serving temporary copies (so a save or autosave never
writes outputs into a committed notebook): of tests/end_to_end/notebooks/, and of the lessons' sources in
solutions/, whose exercises are solved, so that "Run All" goes through every cell (a released lesson
stops at its first exercise). The kernels run with AUTOGRADING=1 and a temporary MRCNN_COURSE_HOME.
Screenshots are saved under test-artifacts/ (git-ignored). Chromium is Debian's /usr/bin/chromium,
driven by Playwright's Python client (never `playwright install`); without it the tests are skipped.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mrcnn_course.training.training_trace import TrainingTrace

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT_S = 90  # JupyterLab's first start builds nothing but may be slow on 2 busy cores
WIDGET_TIMEOUT_MS = 90_000  # kernel start, imports (torch), and the first drawing
LESSON_TIMEOUT_MS = 420_000  # a whole lesson, checks included (about a minute each on 2 quiet cores)
# lesson notebooks, as NN_name/notebook (lesson 03 is two notebooks)
LESSONS = (
    "00_pipeline/00_pipeline",
    "03_rpn/03a_anchors_and_boxes",
    "03_rpn/03b_proposals_and_training",
    "04_roi_align/04_roi_align",
)

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


@contextlib.contextmanager
def serve(tmp_path: Path, served: Path) -> Iterator[str]:
    """A JupyterLab server on the folder `served`: yields its base URL; always stopped."""
    env = {**os.environ, "TQDM_DISABLE": "1", "AUTOGRADING": "1", "MRCNN_COURSE_HOME": str(tmp_path / "home")}
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
    notebooks = news.parents[1] / "notebook-extension" / "tracker.jupyterlab-settings"
    notebooks.parent.mkdir(parents=True)
    notebooks.write_text('{"windowingMode": "none"}')  # every cell in the page, also those scrolled out of view
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
def jupyterlab(tmp_path):
    """JupyterLab on a copy of tests/end_to_end/notebooks."""
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")
    with serve(tmp_path, tmp_path / "notebooks") as url:
        yield url


@pytest.fixture
def lessons_lab(tmp_path):
    """JupyterLab on copies of the lessons' sources (solutions/NN_name/, exercises solved)."""
    for lesson in sorted({notebook.split("/")[0] for notebook in LESSONS}):
        shutil.copytree(ROOT / "solutions" / lesson, tmp_path / "lessons" / lesson)
    with serve(tmp_path, tmp_path / "lessons") as url:
        yield url


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


def run_all(page, url: str) -> None:
    """Open the notebook at `url`, wait for its kernel, and run all its cells (without waiting for them)."""
    page.goto(url)
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel", timeout=WIDGET_TIMEOUT_MS
    )
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=WIDGET_TIMEOUT_MS,
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def test_training_viewer_renders_and_follows_the_slider(jupyterlab, page):
    epochs = len(TrainingTrace.load(NOTEBOOKS / "training_trace.json").epochs)
    assert epochs >= 2, "the notebook's trace needs two epochs or more to move between"
    run_all(page, f"{jupyterlab}/lab/tree/training_viewer.ipynb")

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


# What each lesson must show: the cells whose outputs are screenshot, and those that hold an explorer.
LESSON_VIEWS = {
    "00_pipeline/00_pipeline": {"pictures": ("result", "trace-picture", "nms-off"), "explorers": ()},
    "03_rpn/03a_anchors_and_boxes": {"pictures": ("card", "plug"), "explorers": ("anchor-explorer", "nms-explorer")},
    "03_rpn/03b_proposals_and_training": {"pictures": ("proposals", "plug"), "explorers": ()},
    "04_roi_align/04_roi_align": {"pictures": ("pool-vs-align", "bilinear", "plug"), "explorers": ("explorer",)},
}
FLOAT_NOISE = re.compile(r"\d\.\d{7,}")  # 64.91999816894531: a float32 printed without rounding

# Done when the kernel is idle and every code cell ran, or one failed (Run All stops there). Each cell's
# node is tagged with its id, for the locators below.
RAN_ALL = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
    cells.forEach(cell => { cell.node.dataset.cellId = cell.model.id; });
    const failed = cells.some(cell => cell.model.outputs.toJSON().some(o => o.output_type === 'error'));
    const ran = cells.every(cell => cell.model.executionCount !== null);
    return panel.sessionContext.session.kernel.status === 'idle' && (ran || failed);
}"""
OUTPUTS = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .filter(cell => cell.model.type === 'code')
    .map(cell => ({id: cell.model.id, outputs: cell.model.outputs.toJSON()}))"""


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab_and_shows_every_picture_and_explorer(lessons_lab, page, lesson):
    run_all(page, f"{lessons_lab}/lab/tree/{lesson}.ipynb")
    page.wait_for_function(RAN_ALL, timeout=LESSON_TIMEOUT_MS, polling=1000)
    cells = page.evaluate(OUTPUTS)
    errors = [
        f"cell {cell['id']}: {o['ename']}: {o['evalue'][:500]}"
        for cell in cells
        for o in cell["outputs"]
        if o["output_type"] == "error"
    ]
    assert not errors, "\n".join(errors)
    printed = "".join(o.get("text", "") for cell in cells for o in cell["outputs"] if o["output_type"] == "stream")
    assert not FLOAT_NOISE.findall(printed), f"unrounded numbers printed: {FLOAT_NOISE.findall(printed)}"

    ARTIFACTS.mkdir(exist_ok=True)
    views = LESSON_VIEWS[lesson]
    for cell_id in views["explorers"]:
        explorer = page.locator(f'[data-cell-id="{cell_id}"] .jp-OutputArea-output .widget-vbox').first
        picture = explorer.locator(".widget-image")
        picture.wait_for(timeout=WIDGET_TIMEOUT_MS)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
        assert explorer.locator(".widget-slider, .widget-select-multiple").count() >= 1
        # every control's label shown whole: ipywidgets cuts a long one ("IoU thresh...") with an ellipsis
        cut = explorer.locator(".widget-label").evaluate_all(
            "labels => labels.filter(l => l.scrollWidth > l.clientWidth + 1).map(l => l.textContent)"
        )
        assert not cut, f"{cell_id}: labels cut short: {cut}"
        explorer.screenshot(path=ARTIFACTS / f"lesson_{Path(lesson).name}_{cell_id}.png")
    if lesson == "03_rpn/03a_anchors_and_boxes":
        assert "Ctrl-click" in page.locator('[data-cell-id="anchor-explorer"]').inner_text()
    for cell_id in views["pictures"]:
        output = page.locator(f'[data-cell-id="{cell_id}"] .jp-Cell-outputArea')
        output.wait_for(timeout=WIDGET_TIMEOUT_MS)
        for image in output.locator("img").element_handles():
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
        output.screenshot(path=ARTIFACTS / f"lesson_{Path(lesson).name}_{cell_id}.png")
    assert page.get_by_text("Error displaying widget").count() == 0
    page.locator(".jp-Notebook .jp-Cell").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / f"lesson_{Path(lesson).name}_top.png")  # the lesson as it opens, in JupyterLab
