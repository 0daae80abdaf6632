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
Below them, without nbgrader: a cell that keeps running at its top level is stopped, and fails only the
exercises that need what it defines; the references are built once and read back as written. The process
that runs the learner's code (a fresh fork of one warm runner per notebook) is tested in test_warm_runner.py.
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import torch
from nbgrader.api import Gradebook

from mrcnn_course.teaching.course import autograde, release
from mrcnn_course.teaching.grading import sealed
from mrcnn_course.teaching.grading.core import MESSAGE_WIDTH
from mrcnn_course.teaching.grading.exercise import every_exercise
from mrcnn_course.teaching.grading.judge import difference

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

ROOT = Path(__file__).resolve().parents[3]
LESSON = "03_rpn"
NOTEBOOK = "03a_anchors_and_boxes"  # the notebook of lesson 03 that holds nms
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
    solution = nbformat.read(course / "solutions" / LESSON / f"{NOTEBOOK}.ipynb", 4)
    for learner, source in {"honest": None, **TAMPERED_NMS}.items():
        nb = nbformat.reads(nbformat.writes(solution), 4)
        if source is not None:
            next(c for c in nb.cells if c.get("id") == "nms").source = source
        folder = course / "grading" / "submitted" / learner / LESSON
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
    outcomes = autograde(course, learners=["honest", *TAMPERED_NMS], jobs=2)
    with Gradebook(f"sqlite:///{course}/grading/gradebook.db") as gradebook:
        scores = {
            o.learner: {
                g.name: (g.auto_score, g.max_score)
                for nb in gradebook.find_submission(LESSON, o.learner).notebooks
                if nb.name == NOTEBOOK  # the one handed in (lesson 03's other one, missing, scores 0)
                for g in nb.grades
            }
            for o in outcomes
        }
    return scores


@pytest.mark.slow
def test_an_honest_solution_gets_full_marks(graded):
    short = {cell: score for cell, score in graded["honest"].items() if score[0] != score[1]}
    assert graded["honest"] and not short, short


@pytest.mark.slow
@pytest.mark.parametrize("learner", list(TAMPERED_NMS))
def test_tampering_scores_zero_on_its_check_and_nothing_else_changes(graded, learner):
    scores = dict(graded[learner])
    assert scores.pop("check-nms")[0] == 0.0
    short = {cell: score for cell, score in scores.items() if score[0] != score[1]}
    assert not short, short


def test_the_sealed_check_reads_the_notebook_not_the_kernel(tmp_path):
    """Without nbgrader: a notebook whose nms cell rebinds the check and patches torch.equal fails the re-check
    of its grade cell; the lesson's own nms passes it. The notebook is never run in a kernel here."""
    solution = nbformat.read(ROOT / "solutions" / LESSON / f"{NOTEBOOK}.ipynb", 4)
    keep = {"setup", "box-iou", "nms", "check-nms"}
    honest = nbformat.v4.new_notebook(cells=[c for c in solution.cells if c.get("id") in keep])
    tampered = nbformat.reads(nbformat.writes(honest), 4)
    next(c for c in tampered.cells if c.get("id") == "nms").source = TAMPERED_NMS["rebinds_the_check"]
    assert sealed.checks_of(honest) == {"check-nms": [("nms", "nms")]}
    assert sealed.verify_notebook(honest, tmp_path) == {}
    failures = sealed.verify_notebook(tampered, tmp_path)
    assert list(failures) == ["check-nms"] and "outside your notebook's kernel" in failures["check-nms"]


# ----- a cell that keeps running at its top level -----
# The re-check at autograding stops a cell that keeps running at its top level, and fails only what needs it.
#
# sealed.verify_notebook on a notebook dict (no nbgrader, no kernel) built from lesson 03's cell_anchors,
# box_iou and nms, with three cells that never end:
#     a first answer cell that is only `while True: pass`    defines nothing: fails no exercise
#     an answer cell defining `area`, then a loop that       box_iou calls area: check-box-iou fails,
#     swallows every exception (the runner's own alarm       naming that cell (a helper's cell); the
#     cannot stop it)                                        watcher kills the runner, which starts again
#     the nms answer cell, with `while True: pass` after it  check-nms fails, naming the nms cell
# cell_anchors, defined fast, passes. CELL_TIME_LIMIT is lowered to a few seconds here: the cells that
# are not stopped only import and define. Runtime: about 25 s (two starts of the runner).
SHORT_CELL_LIMIT = 3.0  # seconds: the fast cells here take milliseconds
SETUP = (
    "import time\nimport torch\nfrom mrcnn_course.model import components\nfrom mrcnn_course.teaching import grading"
)
LOOP_ONLY = "while True:\n    pass\n"
AREA_THEN_STUBBORN_LOOP = (
    "def area(boxes):\n"
    "    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])\n"
    "while True:\n"
    "    try:\n"
    "        time.sleep(1)\n"
    "    except BaseException:\n"
    "        pass\n"
)
BOX_IOU_WITH_AREA = (
    "def box_iou(boxes1, boxes2):\n"
    "    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])\n"
    "    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])\n"
    "    sides = (bottom_right - top_left).clamp(min=0)\n"
    "    intersection = sides[..., 0] * sides[..., 1]\n"
    "    return intersection / (area(boxes1)[:, None] + area(boxes2)[None, :] - intersection)\n"
)


def answer_cell(grade_id: str, source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {"grade_id": grade_id, "solution": True}})


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    lesson = {c.get("id"): c for c in nbformat.read(ROOT / "solutions" / LESSON / f"{NOTEBOOK}.ipynb", 4).cells}
    nms = nbformat.reads(nbformat.writes(nbformat.v4.new_notebook(cells=[lesson["nms"]])), 4).cells[0]
    nms.source += "\n" + LOOP_ONLY
    cells = [
        nbformat.v4.new_code_cell(SETUP),
        answer_cell("warm-up", LOOP_ONLY),
        lesson["cell-anchors"],
        lesson["check-cell-anchors"],
        answer_cell("area", AREA_THEN_STUBBORN_LOOP),
        answer_cell("box-iou", BOX_IOU_WITH_AREA),
        lesson["check-box-iou"],
        nms,
        lesson["check-nms"],
    ]
    return nbformat.v4.new_notebook(cells=cells)


@pytest.fixture(scope="module")
def rechecked(notebook, tmp_path_factory) -> tuple[dict[str, str], float]:
    """The re-check's failures, and how long it took."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sealed, "CELL_TIME_LIMIT", SHORT_CELL_LIMIT)
        start = time.monotonic()
        failures = sealed.verify_notebook(notebook, tmp_path_factory.mktemp("sealed"))
        return failures, time.monotonic() - start


def test_only_the_exercises_that_need_a_stopped_cell_fail(rechecked):
    failures, _ = rechecked
    assert sorted(failures) == ["check-box-iou", "check-nms"], failures
    assert "your answer cell for nms kept running at the top level" in " ".join(failures["check-nms"].split())
    assert "your answer cell for area kept running at the top level" in " ".join(failures["check-box-iou"].split())
    assert all("put the work inside a function" in " ".join(f.split()) for f in failures.values())


def test_the_message_fits_nbgrader_validate_width(rechecked):
    failures, _ = rechecked
    for message in failures.values():
        lines = message.splitlines()
        assert len("HiddenCheckFailed: " + lines[0]) <= MESSAGE_WIDTH, lines[0]
        assert all(len(line) <= MESSAGE_WIDTH for line in lines), message


def test_stopping_three_cells_costs_seconds_not_the_runner_limit(rechecked):
    """Three stopped cells: three cell limits and three more starts of the runner, far below its overall
    limit (sealed.RUNNER_SLACK plus the exercises' own limits), which each endless cell used to reach."""
    _, seconds = rechecked
    assert seconds < sealed.RUNNER_SLACK / 2, seconds


# ----- the references: built once per grading run, handed to the workers in a file -----


def test_references_read_back_as_they_were_written_for_every_exercise(tmp_path, monkeypatch):
    """Every exercise's expected outputs and reference time are plain data: the file reads back with
    torch.load(weights_only=True) into what the grading run built."""
    names = sorted(every_exercise())
    path, digest = sealed.save_references(names, tmp_path)
    written = {name: sealed.reference_for(name) for name in names}
    assert path.stat().st_mode & 0o777 == 0o400  # read-only
    monkeypatch.setattr(sealed, "_MEASURED", {})
    sealed.load_references(path, digest)
    for name in names:
        loaded = sealed.reference_for(name)
        assert loaded.package_seconds == written[name].package_seconds, name
        assert difference(written[name].expected, loaded.expected, 0.0, 0.0) is None, name


def test_a_references_file_changed_after_it_was_written_is_not_used(tmp_path, monkeypatch):
    """A learner's code runs as the grader's user: a file whose digest is not the run's own is set aside with a
    warning, and the worker builds its references itself."""
    path, digest = sealed.save_references(["box_iou"], tmp_path)
    right = sealed.reference_for("box_iou").expected
    path.chmod(0o600)
    torch.save({"box_iou": {"expected": [torch.zeros(0)] * len(right), "package_seconds": 1e9}}, path)
    monkeypatch.setattr(sealed, "_MEASURED", {})
    with pytest.warns(UserWarning, match="changed after the grading run wrote it"):
        sealed.load_references(path, digest)
    assert difference(right, sealed.reference_for("box_iou").expected, 0.0, 0.0) is None


class RunsCode:
    """Pickled, a call of os.system: what a file read with plain pickle would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_reading_references_runs_no_code(tmp_path, monkeypatch):
    """Even with the digest the run expects, a file that holds anything but tensors, numbers and text is not
    loaded (torch.load(weights_only=True)): nothing runs, a warning says so."""
    marker = tmp_path / "ran"
    path = tmp_path / sealed.REFERENCES_FILE
    torch.save({"box_iou": {"expected": RunsCode(marker), "package_seconds": None}}, path)
    monkeypatch.setattr(sealed, "_MEASURED", {})
    with pytest.warns(UserWarning, match="were not used"):
        sealed.load_references(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert not marker.exists() and sealed._MEASURED == {}
