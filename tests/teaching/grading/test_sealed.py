"""Tampering scores 0 under real autograding: nbgrader autograde, the real gradebook.

The hidden part of every check runs again outside the learner's kernel (grading/sealed.py, called by
nbgrader_steps.AutogradingExecute), so what a learner's cell rebinds or patches in the kernel cannot reach
it. In a temporary course holding lesson 03, these learners hand in lesson 03's solution with its nms cell
replaced:
    honest             unchanged: full marks
    rebinds_the_check  a wrong nms, and `grading.check_nms = lambda fn, extra=False: print("nms: 7 cases
                       passed")`, with torch.equal patched to say yes: 0 on check-nms
    captured_operator  `_OP = torch.ops.torchvision.nms.default` at definition time, called by nms: 0 on it
    reference_default  the package's nms captured as a default argument, `def nms(..., _f=box_ops.nms)`
Every other graded cell keeps its full marks. Runtime: about 4 autogradings of lesson 03.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from mrcnn_course.teaching.course import autograde, release
from mrcnn_course.teaching.grading import sealed

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

ROOT = Path(__file__).resolve().parents[3]
LESSON = "03_rpn"
TAMPERED_NMS = {
    "rebinds_the_check": (
        "def nms(boxes, scores, iou_threshold):\n"
        "    return scores.argsort(descending=True)  # wrong: suppresses nothing\n"
        "grading.check_nms = lambda fn, extra=False: print('nms: 7 cases passed')\n"
        "torch.equal = lambda a, b: True\n"
    ),
    "captured_operator": (
        "_OP = torch.ops.torchvision.nms.default\n"
        "def nms(boxes, scores, iou_threshold):\n"
        "    return _OP(boxes, scores, iou_threshold)\n"
    ),
    "reference_default": (
        "from mrcnn_course.model import box_ops\n"
        "def nms(boxes, scores, iou_threshold, _f=box_ops.nms):\n"
        "    return _f(boxes, scores, iou_threshold)\n"
    ),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions" / LESSON, course / "solutions" / LESSON)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    release(course, [LESSON])
    solution = nbformat.read(course / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    for learner, source in {"honest": None, **TAMPERED_NMS}.items():
        nb = nbformat.reads(nbformat.writes(solution), 4)
        if source is not None:
            next(c for c in nb.cells if c.get("id") == "nms").source = source
        folder = course / "grading" / "submitted" / learner / LESSON
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LESSON}.ipynb")
    outcomes = autograde(course, learners=["honest", *TAMPERED_NMS], jobs=2)
    with Gradebook(f"sqlite:///{course}/grading/gradebook.db") as gradebook:
        scores = {
            o.learner: {
                g.name: (g.auto_score, g.max_score)
                for nb in gradebook.find_submission(LESSON, o.learner).notebooks
                for g in nb.grades
            }
            for o in outcomes
        }
    return scores


@pytest.mark.slow
def test_an_honest_solution_gets_full_marks(graded):
    assert graded["honest"] and all(score == most for score, most in graded["honest"].values()), graded["honest"]


@pytest.mark.slow
@pytest.mark.parametrize("learner", list(TAMPERED_NMS))
def test_tampering_scores_zero_on_its_check_and_nothing_else_changes(graded, learner):
    scores = dict(graded[learner])
    assert scores.pop("check-nms")[0] == 0.0
    assert all(score == most for score, most in scores.values()), scores


def test_the_sealed_check_reads_the_notebook_not_the_kernel(tmp_path):
    """Without nbgrader: a notebook whose nms cell rebinds the check and patches torch.equal fails the re-check
    of its grade cell; the lesson's own nms passes it. The notebook is never run in a kernel here."""
    solution = nbformat.read(ROOT / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    keep = {"setup", "box-iou", "nms", "check-nms"}
    honest = nbformat.v4.new_notebook(cells=[c for c in solution.cells if c.get("id") in keep])
    tampered = nbformat.reads(nbformat.writes(honest), 4)
    next(c for c in tampered.cells if c.get("id") == "nms").source = TAMPERED_NMS["rebinds_the_check"]
    assert sealed.checks_of(honest) == {"check-nms": [("nms", "nms")]}
    assert sealed.verify_notebook(honest, tmp_path) == {}
    failures = sealed.verify_notebook(tampered, tmp_path)
    assert list(failures) == ["check-nms"] and "outside your notebook's kernel" in failures["check-nms"]
