"""mrcnn_course.teaching.notebook_errors in a real kernel, read through nbgrader's Validator:
a check run before the cells it needs says which cell to run, a quiz answer left None never prints the
sealed key, and every failure's verdict and hint reach `nbgrader validate` whole (it cuts lines at 87
characters). About 10 s: one kernel."""

import io
import re

import nbformat
import pytest
from nbgrader.validator import Validator

from mrcnn_course.teaching import quiz

pytestmark = pytest.mark.slow

KEY = quiz.key(
    "B",
    "RoI Align reads between the cells: " + "an explanation long enough to be sealed. " * 12,
    {"A": "Not that.", "C": "Nor that.", "D": "Nor this one."},
)
CHECK_Q1 = (
    "from mrcnn_course.teaching import quiz  # again: the setup cell may not have run\n"
    f'q1_key = "{KEY}"\nquiz.check("q1", q1, q1_key)'
)
AGAIN = "from mrcnn_course.teaching import grading  # again: the setup cell may not have run\n"
CHECK_NMS = AGAIN + "grading.check_nms(nms)"
WRONG_IOU = """def box_iou(boxes1, boxes2):
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = bottom_right - top_left
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter)"""
CHECK_IOU = AGAIN + "grading.check_box_iou(box_iou)"
TYPO = "def area(box):\n    return wdth * 2\narea(None)"

CELLS = [  # (source, graded): in the order a hurried learner runs them
    (CHECK_Q1, True),  # before its answer cell
    ("q1 = None", False),
    (CHECK_Q1, True),  # the answer left None
    (CHECK_NMS, True),  # before the function's cell (and before any setup)
    ("import torch", False),
    (WRONG_IOU, False),
    (CHECK_IOU, True),  # a wrong answer: the verdict and the hint must reach validate whole
    (TYPO, False),  # a NameError inside a function: IPython's own traceback, at the learner's line
]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    cells = []
    for i, (source, graded) in enumerate(CELLS):
        nbgrader = {"grade": graded, "solution": False, "locked": graded, "schema_version": 3, "grade_id": f"c{i}"}
        if graded:
            nbgrader["points"] = 1
        cells.append(nbformat.v4.new_code_cell(source, metadata={"nbgrader": nbgrader}))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    path = tmp_path_factory.mktemp("nb") / "hurried.ipynb"
    nbformat.write(nb, path)

    class Recording(Validator):
        executed = None

        def _preprocess(self, nb):
            self.executed = super()._preprocess(nb)
            return self.executed

    validator = Recording(validate_all=True)
    validator.stream = io.StringIO()
    validator.validate_and_print(str(path))
    return validator.executed.cells, validator.stream.getvalue()


def plain(text: str) -> str:
    """Without the terminal colours of IPython's tracebacks."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def error(cell):
    return next(o for o in cell.outputs if o.output_type == "error")


def test_a_quiz_check_before_its_answer_cell_says_which_cell_to_run(validated):
    cells, _ = validated
    found = error(cells[0])
    assert found.ename == "NameError"
    assert found.traceback[0] == "NameError: name 'q1' is not defined."
    assert "Run the answer cell of q1" in " ".join(found.traceback)
    assert KEY[:40] not in "\n".join(found.traceback)


def test_an_answer_left_none_never_prints_the_sealed_key(validated):
    cells, _ = validated
    found = error(cells[2])
    assert [o.output_type for o in cells[2].outputs] == ["error"]
    assert found.ename == "AnswerMissing" and found.evalue.startswith("q1 is still None")
    assert KEY[:40] not in "\n".join(found.traceback) and KEY[-40:] not in "\n".join(found.traceback)


def test_a_check_before_the_functions_cell_says_which_cell_to_run(validated):
    cells, _ = validated
    found = error(cells[3])
    assert found.ename == "NameError" and "name 'nms' is not defined" in found.traceback[0]
    advice = " ".join(" ".join(found.traceback).split())
    assert "If a cell above defines it (the setup cell at the top, `def nms` or `nms = ...`), run it first" in advice


def test_a_name_error_inside_a_function_keeps_the_learners_line(validated):
    cells, _ = validated
    found = error(cells[7])
    assert found.ename == "NameError" and "return wdth * 2" in plain("\n".join(found.traceback))


def test_validate_shows_each_verdict_and_hint_whole(validated):
    _, printed = validated
    lines = plain(printed).splitlines()
    text = " ".join(" ".join(line.split()) for line in lines)
    for phrase in (
        "NameError: name 'q1' is not defined.",
        "q1 is still None: set q1",
        "NameError: name 'nms' is not defined.",
        "check_box_iou: case 'disjoint boxes' failed.",
        "hint: your answer is what this mistake gives: the overlap's width and height must be clamped at 0",
    ):
        assert phrase in text, phrase
    verdicts = [i for i, line in enumerate(lines) if "check_box_iou: case" in line]
    assert verdicts and not any(line.endswith("...") for line in lines[verdicts[0] : verdicts[0] + 4])
    assert KEY[100:140] not in printed  # validate shows the cell's source cut at 87 characters, never the key
