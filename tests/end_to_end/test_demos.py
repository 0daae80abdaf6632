"""The instructor's live demos in demos/ run top to bottom, and stay demos: no outputs in git, nothing graded.

Each notebook runs in a kernel with AUTOGRADING=1 (the training demo then trains the short recipe) and
TQDM_DISABLE=1, as CI runs the lessons. About 30 s for the pipeline, a minute for training.
demos/class_dashboard.ipynb runs on a graded class in tests/teaching/test_dashboard.py.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
DEMOS = sorted((ROOT / "demos").glob("*.ipynb"))
LIVE = ["pipeline_live", "training_live"]
STAGES = ["Input image", "Backbone CNN", "Region Proposal Network", "RoI Align", "Box & classifier head", "Mask head"]


def _run(name: str, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("AUTOGRADING", "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(ROOT / "demos" / f"{name}.ipynb", 4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "demos")}}
    ).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def test_the_demos_are_there():
    assert {p.stem for p in DEMOS} >= {*LIVE, "class_dashboard"}


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_a_demo_has_no_outputs_and_grades_nothing(path):
    for cell in nbformat.read(path, 4).cells:
        assert "nbgrader" not in cell.metadata, f"{path.name}: a demo has no exercises or graded cells"
        assert cell.cell_type != "code" or (cell.outputs == [] and cell.execution_count is None), path.name


@pytest.mark.slow
def test_the_pipeline_demo_shows_the_six_stages(monkeypatch):
    nb = _run("pipeline_live", monkeypatch)
    headings = [o["data"]["text/markdown"] for o in _outputs(nb, "text/markdown")]
    assert [h.split(":")[0] for h in headings] == [f"### {n} {name}" for n, name in enumerate(STAGES, 1)]
    assert len(_outputs(nb, "image/png")) >= 10  # detections, data flow, six stages, the whole trace, NMS off


@pytest.mark.slow
def test_the_training_demo_trains_with_the_viewer(monkeypatch):
    nb = _run("training_live", monkeypatch)
    assert _outputs(nb, "application/vnd.jupyter.widget-view+json"), "the TrainingViewer is displayed"
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "2 epochs in" in text  # the short recipe under AUTOGRADING=1
    assert len(_outputs(nb, "image/png")) >= 2
