"""An endless loop in one answer cell costs its exercise, and about one Execute.timeout, under real autograding.

In a temporary course holding simulated_class's short lesson (lesson 03's box_iou and nms, 2 points
each), two learners hand in the instructor's version, one of them with `while True: pass` after its
nms, at the top level of the same cell. nbgrader autograde (course.autograde, one at a time) grades:
    looping   the kernel interrupts the cell after Execute.timeout and defines nms (its check passes
              in the kernel); the re-check outside the kernel stops the cell after
              sealed.CELL_TIME_LIMIT and fails check-nms only: box_iou keeps its 2 points, nms 0
    honest    full marks
The looping submission must cost at most the honest one's time plus Execute.timeout plus MARGIN. The
looping one is graded first, so it pays the start-up costs of the grading process. Execute.timeout is
lowered to KERNEL_TIMEOUT in this course's configuration so that the test waits less; the honest
notebook's slowest cell takes a few seconds. Runtime: about 1.5 minutes.
"""

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import simulated_class
from nbgrader.api import Gradebook

from mrcnn_course.teaching import course
from mrcnn_course.teaching.grading import sealed

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]
ROOT = Path(__file__).resolve().parents[2]
LESSON = simulated_class.LESSON
KERNEL_TIMEOUT = 40  # seconds: Execute.timeout in this course
# Beyond Execute.timeout, the looping submission costs one CELL_TIME_LIMIT and one more start of the
# re-check's runner (a few seconds); the rest is for a shared, noisy machine.
MARGIN = sealed.CELL_TIME_LIMIT + 15.0
ENDLESS = "\nwhile True:\n    pass\n"


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, tuple[float, dict[str, float]]]:
    """learner -> (seconds to autograde, {grade cell: score})."""
    root = tmp_path_factory.mktemp("course")
    (root / "solutions" / LESSON).mkdir(parents=True)
    nbformat.write(simulated_class._lesson_source(), root / "solutions" / LESSON / f"{LESSON}.ipynb")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.Execute.timeout = {KERNEL_TIMEOUT}\n")
    course.release(root, [LESSON])
    honest = nbformat.read(root / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    looping = nbformat.reads(nbformat.writes(honest), 4)
    next(c for c in looping.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "nms").source += ENDLESS
    simulated_class.hand_in(root, "honest", LESSON, honest)
    simulated_class.hand_in(root, "looping", LESSON, looping)
    seconds = {o.learner: o.seconds for learner in ("looping", "honest") for o in course.autograde(root, [learner])}
    with Gradebook(f"sqlite:///{root}/grading/gradebook.db") as gradebook:
        return {
            learner: (
                seconds[learner],
                {
                    g.name: g.auto_score
                    for nb in gradebook.find_submission(LESSON, learner).notebooks
                    for g in nb.grades
                },
            )
            for learner in seconds
        }


def test_the_looping_exercise_scores_zero_and_the_others_full_marks(graded):
    _, honest = graded["honest"]
    _, looping = graded["looping"]
    assert honest == {"check-box-iou": 2.0, "check-nms": 2.0}, honest
    assert looping == {"check-box-iou": 2.0, "check-nms": 0.0}, looping


def test_the_loop_costs_about_one_kernel_timeout(graded):
    honest_seconds, _ = graded["honest"]
    looping_seconds, _ = graded["looping"]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"honest {honest_seconds:.1f} s, looping {looping_seconds:.1f} s ({load})")
    assert looping_seconds <= honest_seconds + KERNEL_TIMEOUT + MARGIN, (honest_seconds, looping_seconds, load)
