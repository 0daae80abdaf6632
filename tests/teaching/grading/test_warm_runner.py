"""mrcnn_course.teaching.grading.warm_runner: the process that runs a learner's code for the re-check.

Through sealed.verify_notebook (no nbgrader, no kernel), on lesson 03a's setup, box_iou and nms cells and
their checks: each notebook runs in a fresh fork of one warm runner (a notebook that patches its runner
cannot reach the next one's), a runner that kills the server fails only its own notebook, and the runner
times the speed case against the grading run's reference time. Then the runner's helpers on their own:
which names a cell binds, which names a function needs, and what the results file can hold.
"""

import io
from pathlib import Path

import nbformat
import torch

from mrcnn_course.teaching.grading import sealed, warm_runner
from mrcnn_course.teaching.grading.warm_runner import _names_needed, _plain, _top_level_names

ROOT = Path(__file__).resolve().parents[3]
LESSON = "03_rpn"
NOTEBOOK = "03a_anchors_and_boxes"  # the notebook of lesson 03 that holds nms
# The attacker's patch of the runner it runs in: every outcome the reference's output. The server runs as
# `python -m`, so run_learner's names are those of __main__ (importing warm_runner by name gives a copy).
ALWAYS_RIGHT = (
    "import __main__\n"
    "from mrcnn_course.teaching.grading import judge\n"
    "__main__.run_cases = lambda exercise, fn, cases, forbidden=None: [\n"
    "    judge.Outcome(judge.OK, exercise.result(exercise.reference_function(), case.args)) for case in cases]\n"
)
WRONG_NMS = "def nms(boxes, scores, iou_threshold):\n    return scores.argsort(descending=True)\n"
SLOW_BOX_IOU = (  # right, but burns 2.5 s of CPU on the speed case's inputs (a training step's: many boxes)
    "import time\n"
    "def box_iou(boxes1, boxes2):\n"
    "    if len(boxes1) * len(boxes2) > 10000:\n"
    "        end = time.thread_time() + 2.5\n"
    "        while time.thread_time() < end:\n"
    "            pass\n"
    "    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])\n"
    "    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])\n"
    "    sides = (bottom_right - top_left).clamp(min=0)\n"
    "    intersection = sides[..., 0] * sides[..., 1]\n"
    "    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])\n"
    "    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])\n"
    "    return intersection / (area1[:, None] + area2[None, :] - intersection)\n"
)


def lesson_03a(**sources: str) -> nbformat.NotebookNode:
    """Lesson 03a's setup, box_iou and nms cells and their checks, with the cells named (by id) replaced."""
    cells = {c.get("id"): c for c in nbformat.read(ROOT / "solutions" / LESSON / f"{NOTEBOOK}.ipynb", 4).cells}
    chosen = ["setup", "box-iou", "check-box-iou", "nms", "check-nms"]
    nb = nbformat.v4.new_notebook(cells=[cells[i] for i in chosen])
    nb = nbformat.reads(nbformat.writes(nb), 4)  # a copy
    for cell in nb.cells:
        cell.source = sources.get(cell.get("id").replace("-", "_"), cell.source)
    return nb


def test_each_notebook_runs_in_a_fresh_fork_of_one_warm_runner(tmp_path):
    """A notebook that patches the runner it runs in lies about its own outcomes (what the re-check leaves out)
    but cannot reach the next notebook's: on the same warm runner (no new server), a wrong nms handed in after
    the attacker's still fails, and the lesson's own passes."""
    server = warm_runner.warm_runner()._server.pid
    assert sealed.verify_notebook(lesson_03a(nms=ALWAYS_RIGHT + WRONG_NMS), tmp_path) == {}  # the patch took
    failures = sealed.verify_notebook(lesson_03a(nms=WRONG_NMS), tmp_path)
    assert list(failures) == ["check-nms"] and "outside your notebook's kernel" in failures["check-nms"]
    assert sealed.verify_notebook(lesson_03a(), tmp_path) == {}
    assert warm_runner.warm_runner()._server.pid == server


def test_a_runner_that_kills_the_warm_runner_fails_only_its_own_notebook(tmp_path):
    """A notebook whose cell kills the server its runner was forked from fails its own checks; the next notebook
    is re-checked by a server started again."""
    kills = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
    failures = sealed.verify_notebook(lesson_03a(box_iou=kills + "box_iou = None\n"), tmp_path)
    assert sorted(failures) == ["check-box-iou", "check-nms"] and "the runner stopped" in failures["check-nms"]
    assert sealed.verify_notebook(lesson_03a(), tmp_path) == {}


def test_a_slow_function_fails_its_speed_case_against_the_runs_reference_time(tmp_path):
    """box_iou's speed case is timed against the package's time measured once (sealed.reference_for): the lesson's
    box_iou passes it, a right one that is far too slow fails it, and only that check."""
    assert sealed.reference_for("box_iou").package_seconds > 0
    assert sealed.verify_notebook(lesson_03a(), tmp_path) == {}
    failures = sealed.verify_notebook(lesson_03a(box_iou=SLOW_BOX_IOU), tmp_path)
    assert list(failures) == ["check-box-iou"], failures
    assert "speed case" in failures["check-box-iou"] and "slower than the package's" in failures["check-box-iou"]


# ----- the runner's helpers -----


def test_a_cells_top_level_names_are_what_it_binds_not_its_functions_locals():
    source = (
        "import os.path\nimport numpy as np\nfrom math import pi\n"
        "def area(boxes):\n    inside = 1\n    return inside\n"
        "class Box:\n    side = 2\n"
        "x, (y, z) = 1, (2, 3)\n"
        "for i in range(2):\n    j = i\n"
        "f = lambda k: k\n"
    )
    assert _top_level_names(source) == {"os", "np", "pi", "area", "Box", "x", "y", "z", "i", "j", "f"}
    assert _top_level_names("while True:\n    pass\n") == set()
    assert _top_level_names("%timeit x = 1") == set()  # an IPython magic: not Python, binds nothing here


def test_a_function_needs_its_globals_and_its_helpers_globals_not_the_other_functions():
    namespace: dict = {"__name__": "__main__"}
    source = (
        "import math\nSCALE = 2\n"
        "def helper(x):\n    return math.sqrt(x) * SCALE\n"
        "def unused():\n    return OTHER\n"
        "def fn(x):\n    return helper(abs(x)) if x else (lambda: LATER)()\n"  # LATER: a branch not taken
    )
    exec(compile(source, "<notebook>", "exec"), namespace)  # noqa: S102 (this test's own code)
    assert _names_needed(namespace["fn"], namespace) == {"helper", "math", "SCALE", "LATER"}  # abs: a builtin
    assert _names_needed(namespace["math"].sqrt, namespace) == set()  # not the notebook's
    assert _names_needed(None, namespace) == set()


def test_a_result_is_made_plain_data_that_reads_back_without_running_code():
    value = {"out": (torch.ones(2, requires_grad=True) * 2, [1, 2.5, "a", None, True]), 3: object()}
    plain = _plain(value)
    data = io.BytesIO()
    torch.save(plain, data)
    data.seek(0)
    loaded = torch.load(data, weights_only=True)
    assert set(loaded) == {"out", "3"} and loaded["3"].startswith("<object object")
    tensor, numbers = loaded["out"]
    assert torch.equal(tensor, torch.full((2,), 2.0)) and not tensor.requires_grad
    assert numbers == [1, 2.5, "a", None, True]
