"""What the README promises an instructor who keeps hidden cases private: a hidden test of their own, in
their private copy of solutions/, whose inputs come from a seed only the grading machine has
(MRCNN_SECRET_SEED in `make autograde`'s environment).

Checked with nbgrader's real release and autograding: the released notebook has neither the hidden
test nor the seed; a function that passes the visible check by remembering its answers fails the
hidden one; the seed's value is in no feedback. About 20 s.
"""

import random
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mrcnn_course.teaching import course

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]
ROOT = Path(__file__).resolve().parents[2]
NAME = "91_private"
SEED = "271828"
ANSWER = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION'''
# the README's pattern: visible cases for everyone, private ones drawn from the grading machine's seed
CHECK = """assert double(1) == 2 and double(5) == 10, "double: the visible cases"
### BEGIN HIDDEN TESTS
import os, random
x = random.Random(int(os.environ["MRCNN_SECRET_SEED"])).randint(10, 10**6)
assert double(x) == 2 * x, "double: a private case"
### END HIDDEN TESTS"""


def _cell(source: str, grade_id: str, **nbgrader) -> nbformat.NotebookNode:
    meta = {"grade_id": grade_id, "schema_version": 3, "locked": False, "solution": False, "grade": False, **nbgrader}
    return new_code_cell(source, metadata={"nbgrader": meta})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    nb = new_notebook(
        cells=[
            _cell(ANSWER, "double", solution=True),
            _cell(CHECK, "check-double", grade=True, locked=True, points=1),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    (root / "solutions" / NAME).mkdir(parents=True)
    nbformat.write(nb, root / "solutions" / NAME / f"{NAME}.ipynb")
    course.release(root)
    released = nbformat.read(root / "lessons" / NAME / f"{NAME}.ipynb", 4)
    for learner, body in (("honest", "return 2 * x"), ("memorizer", "return {1: 2, 5: 10}.get(x, 0)")):
        handed_in = nbformat.reads(nbformat.writes(released), 4)
        handed_in.cells[0].source = f"def double(x):\n    {body}"
        (root / "grading" / "submitted" / learner / NAME).mkdir(parents=True)
        nbformat.write(handed_in, root / "grading" / "submitted" / learner / NAME / f"{NAME}.ipynb")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MRCNN_SECRET_SEED", SEED)  # only the grading machine has it; the kernels inherit it
        outcomes = {o.learner: o for o in course.autograde(root)}
    return root, released, outcomes


def test_the_release_has_neither_the_hidden_test_nor_the_seed(graded):
    _, released, _ = graded
    text = nbformat.writes(released)
    assert "MRCNN_SECRET_SEED" not in text and "HIDDEN" not in text and "a private case" not in text


def test_remembered_answers_fail_the_private_case(graded):
    _, _, outcomes = graded
    assert outcomes["honest"].score == 1 and outcomes["memorizer"].score == 0


def test_the_seed_and_the_private_input_are_in_no_feedback(graded):
    root, _, _ = graded
    private_input = str(random.Random(int(SEED)).randint(10, 10**6))
    for learner in ("honest", "memorizer"):
        feedback = (root / "grading" / "feedback" / learner / NAME / f"{NAME}.html").read_text()
        assert SEED not in feedback and private_input not in feedback, learner
