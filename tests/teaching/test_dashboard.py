"""mrcnn_course.teaching.dashboard on a simulated class with a known answer (tests/simulated_class.py).

The class is graded for real (nbgrader, two workers into the SQLite gradebook, as `make autograde
JOBS=2` does), then the dashboard's reading is compared with what the simulation says, the figure is
drawn, `make dashboard`'s command writes its picture and demos/class_dashboard.ipynb runs on the class.
About a minute: 17 submissions, most of them quizzes.
"""

from pathlib import Path

import matplotlib
import nbformat
import pytest
import simulated_class
from nbclient import NotebookClient

from mrcnn_course.teaching import course, dashboard
from mrcnn_course.teaching.__main__ import main

matplotlib.use("Agg")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    simulated_class.make_course(root)
    outcomes = course.autograde(root, jobs=2)
    return {"root": root, "outcomes": outcomes, "expected": simulated_class.expected()}


def test_two_workers_give_the_known_grades(graded):
    scores = {(o.learner, o.assignment): o.score for o in graded["outcomes"]}
    expected = graded["expected"]["scores"]
    assert scores == {(learner, name): s for name, by in expected.items() for learner, s in by.items()}
    assert [(o.learner, o.assignment) for o in graded["outcomes"]] == sorted(scores), "sorted as a serial run"


def test_the_dashboard_reads_the_known_answer(graded):
    results = dashboard.read_class(graded["root"])
    expected = graded["expected"]
    assert results.assignments == ["90_boxes", "quiz_00_pipeline", "quiz_03_rpn"]
    assert results.learners == simulated_class.LEARNERS
    assert results.scores == expected["scores"]
    assert results.max_scores == expected["max_scores"]
    assert results.pass_rates == pytest.approx(expected["pass_rates"])
    assert dict(results.failed_cases) == expected["failed_cases"]
    assert results.missing == expected["missing"]


def test_the_figure_has_its_four_panels(graded):
    results = dashboard.read_class(graded["root"])
    fig = dashboard.figure(results)
    scores, rates, cases, missing = fig.axes[:4]
    assert [t.get_text() for t in scores.get_yticklabels()] == [
        "90_boxes (6, 1 failed)",
        "quiz_00_pipeline (6)",
        "quiz_03_rpn (5)",
    ]
    assert len(rates.patches) == len(results.pass_rates)
    assert {t.get_text() for t in cases.get_yticklabels()} == {
        f"{exercise}: '{case}'" for exercise, case in graded["expected"]["failed_cases"]
    }
    assert [t.get_text() for t in missing.get_yticklabels()] == sorted(graded["expected"]["missing"])
    assert missing.get_title() == "Not handed in (dark): 3 of 7 learners"


def test_make_dashboard_writes_the_picture(graded, monkeypatch, capsys):
    monkeypatch.chdir(graded["root"])
    assert main(["dashboard"]) == 0
    path = graded["root"] / "grading" / "dashboard.png"
    assert f"wrote {path}" in capsys.readouterr().out and path.stat().st_size > 10_000


def test_the_class_dashboard_notebook_runs_on_the_class(graded, monkeypatch):
    nb = nbformat.read(ROOT / "demos" / "class_dashboard.ipynb", 4)
    monkeypatch.setenv("MRCNN_COURSE_ROOT", str(graded["root"]))  # the kernel inherits this environment
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "demos")}}
    ).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "7 learners, 3 assignments handed in" in text
    assert sum(o.output_type == "display_data" for c in nb.cells for o in c.get("outputs", [])) >= 4


def test_a_class_with_nothing_graded_yet(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    results = dashboard.read_class(tmp_path)
    assert results.assignments == [] and results.learners == [] and not results.failed_cases
    texts = [t.get_text() for ax in dashboard.figure(results).axes for t in ax.texts]
    assert texts.count("nothing graded yet: make autograde") == 3 and "no checker case failed" in texts
