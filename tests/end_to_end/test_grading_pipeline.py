"""Autograding a class end to end, with nbgrader's real commands and the real gradebook.

In a temporary copy of the course (solutions/ and nbgrader_config.py), the fixture releases every
assignment (teaching.course.release), hands in the work of simulated learners, autogrades it, writes
feedback, and the tests read the results back from the gradebook (nbgrader.api.Gradebook), never
from exit codes: `nbgrader autograde` exits 1 when one learner fails and still grades the others.

    solutions      the instructor versions of the WHOLE course (every lesson and quiz in solutions/):
                   full marks; graded by teaching.course.autograde, as `make autograde` does
    untouched      the released quiz as it is: 0 on every graded cell
    partly_wrong   2 right answers, 2 wrong, 1 unanswered: 2 points
    edited_test    a locked check cell replaced by `pass` (with a wrong answer): restored, 0 on it
    deleted_test   a check cell deleted (with a wrong answer): added back, 0 on it
    infinite_loop  an answer cell `while True: pass`: interrupted by Execute.timeout, later cells graded
    kernel_crash   an answer cell calling os._exit(1): recorded as failed
    corrupt        a notebook that is not JSON: recorded as failed
    typo           a folder named after no assignment: reported by `make autograde`
The special learners hand in one quiz and are graded by the `nbgrader autograde` command with a short
Execute.timeout. Runtime: about 1 minute plus the autograding of every lesson (see
benchmarks/autograde_course.py for the per-assignment times).
"""

import ast
import csv
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from simulated_class import hand_in, wrong_letter  # tests/simulated_class.py: a class's hand-ins

from mrcnn_course.teaching.course import autograde, release, write_grades

pytestmark = [
    pytest.mark.slow,
    # nbgrader's own gradebook code warns about its session handling; nothing to act on here
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
QUIZ = "quiz_03_rpn"
LOOP_TIMEOUT = 15  # seconds: enough for the kernel to import torch on a busy machine
SPECIAL = ["untouched", "partly_wrong", "edited_test", "deleted_test", "infinite_loop", "kernel_crash", "corrupt"]


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _right_answers(source_nb) -> list[str]:
    """The letters the solution sets, from q1_answer, q2_answer, ... in order."""
    answers = []
    while any(c.metadata.get("nbgrader", {}).get("grade_id") == f"q{len(answers) + 1}_answer" for c in source_nb.cells):
        solution = _cell(source_nb, f"q{len(answers) + 1}_answer").source.split("### BEGIN SOLUTION")[1]
        answers.append(re.search(r'= "([A-D])"', solution).group(1))
    return answers


def _answered(released, answers: list[str | None], source_of=None):
    """The released quiz with q1..qN set to these letters (None: left as it is); source_of[n] replaces
    answer cell n's code instead."""
    nb = nbformat.reads(nbformat.writes(released), 4)
    for n, letter in enumerate(answers, 1):
        if letter is not None:
            _cell(nb, f"q{n}_answer").source = f'q{n} = "{letter}"'
    for n, code in (source_of or {}).items():
        _cell(nb, f"q{n}_answer").source = code
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "nbgrader_config.py", course)
    assignments = release(course)

    released = nbformat.read(course / "quizzes" / QUIZ / f"{QUIZ}.ipynb", 4)
    right = _right_answers(nbformat.read(course / "solutions" / QUIZ / f"{QUIZ}.ipynb", 4))
    wrong_q1 = [wrong_letter(right[0])] + right[1:]
    hand_in(course, "untouched", QUIZ, released)
    hand_in(
        course,
        "partly_wrong",
        QUIZ,
        _answered(released, [right[0], wrong_letter(right[1]), right[2], wrong_letter(right[3])]),
    )
    edited = _answered(released, wrong_q1)
    _cell(edited, "q1_check").source = "pass"
    hand_in(course, "edited_test", QUIZ, edited)
    deleted = _answered(released, wrong_q1)
    deleted.cells.remove(_cell(deleted, "q1_check"))
    hand_in(course, "deleted_test", QUIZ, deleted)
    hand_in(course, "infinite_loop", QUIZ, _answered(released, right, {2: "while True:\n    pass"}))
    hand_in(course, "kernel_crash", QUIZ, _answered(released, right, {2: "import os\nos._exit(1)"}))
    hand_in(course, "corrupt", QUIZ, text='{"cells": [ this is not JSON')
    hand_in(course, "typo", "quiz_3_rpn", released)  # a folder named after no assignment
    for assignment in assignments:  # the instructor versions, every lesson and quiz
        shutil.copytree(
            course / "solutions" / assignment.name, course / "grading" / "submitted" / "solutions" / assignment.name
        )

    special = subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", QUIZ, f"--Execute.timeout={LOOP_TIMEOUT}"],
        cwd=course,
        capture_output=True,
        text=True,
    )
    feedback = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_feedback", QUIZ], cwd=course, capture_output=True, text=True
    )
    outcomes = autograde(course, learners=["solutions"])
    failures = autograde(course, learners=["corrupt", "kernel_crash", "typo"])  # as `make autograde` does
    return {
        "root": course,
        "assignments": assignments,
        "right": right,
        "outcomes": outcomes,
        "failures": failures,
        "special": special,
        "feedback": feedback,
        "csv": write_grades(course),
    }


def _scores(course, learner: str, assignment: str = QUIZ) -> dict[str, float | None]:
    with Gradebook(f"sqlite:///{course['root']}/grading/gradebook.db") as gradebook:
        submission = gradebook.find_submission(assignment, learner)
        return {g.name: g.auto_score for nb in submission.notebooks for g in nb.grades}


def test_the_commands_ran(course):
    assert course["special"].returncode == 1, "nbgrader autograde should report the failed learners"
    log = course["special"].stderr
    for learner in ("corrupt", "kernel_crash"):
        assert f"There was an error processing assignment '{QUIZ}' for student '{learner}'" in log
    assert course["feedback"].returncode == 0, course["feedback"].stderr[-3000:]


def test_solutions_get_full_marks_on_the_whole_course(course):
    graded = {o.assignment: o for o in course["outcomes"]}
    assert set(graded) == {a.name for a in course["assignments"]}, "every lesson and quiz in solutions/"
    for name, outcome in graded.items():
        assert outcome.error == "" and outcome.score == outcome.max_score, (name, outcome)
        scores = _scores(course, "solutions", name)
        assert all(s is not None for s in scores.values()), (name, scores)
        # lesson 00 shows the model at work and lesson 08 is the ablation lab (predict, read, run): they grade
        # nothing; every other assignment grades something
        ungraded = name in ("00_pipeline", "08_ablation")
        assert (outcome.max_score == 0 and not scores) if ungraded else (outcome.max_score > 0 and scores)


def test_untouched_scores_zero_on_every_graded_cell(course):
    scores = _scores(course, "untouched")
    assert len(scores) == len(course["right"]) and set(scores.values()) == {0.0}


def test_partly_wrong_gets_the_partial_score(course):
    unanswered = {f"q{n}_check": 0.0 for n in range(5, len(course["right"]) + 1)}
    assert _scores(course, "partly_wrong") == {
        "q1_check": 1.0,
        "q2_check": 0.0,
        "q3_check": 1.0,
        "q4_check": 0.0,
        **unanswered,
    }


@pytest.mark.parametrize("learner", ["edited_test", "deleted_test"])
def test_a_tampered_check_is_restored_and_graded(course, learner):
    expected = {f"q{n}_check": 1.0 for n in range(2, len(course["right"]) + 1)}
    assert _scores(course, learner) == {"q1_check": 0.0, **expected}
    graded = nbformat.read(course["root"] / "grading" / "autograded" / learner / QUIZ / f"{QUIZ}.ipynb", 4)
    check = _cell(graded, "q1_check")
    assert "quiz.is_right(q1, q1_key)" in check.source  # the gradebook's version, hidden test included
    assert [o.get("ename") for o in check.outputs if o.output_type == "error"] == ["AssertionError"]


def test_an_endless_loop_is_interrupted_and_later_cells_graded(course):
    scores = _scores(course, "infinite_loop")
    assert scores.pop("q2_check") == 0.0 and set(scores.values()) == {1.0}


@pytest.mark.parametrize("learner", ["kernel_crash", "corrupt"])
def test_a_crash_or_corrupt_notebook_is_recorded_as_failed(course, learner):
    assert set(_scores(course, learner).values()) == {None}  # in the gradebook, never autograded
    assert not (course["root"] / "grading" / "feedback" / learner / QUIZ).exists()


def test_make_autograde_reports_why_a_submission_failed(course):
    errors = {o.learner: o.error for o in course["failures"] if o.score is None}
    assert "Notebook does not appear to be JSON" in errors["corrupt"]
    assert "Kernel died" in errors["kernel_crash"]
    assert "no assignment 'quiz_3_rpn' in solutions/: rename the folder" in errors["typo"]


def _text(path: Path) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", path.read_text())).split())


def test_feedback_explains_right_answers_only(course):
    feedback = course["root"] / "grading" / "feedback"
    for learner in ("untouched", "partly_wrong", "edited_test", "deleted_test", "infinite_loop"):
        assert (feedback / learner / QUIZ / f"{QUIZ}.html").is_file(), learner
    for assignment in course["assignments"]:
        assert list((feedback / "solutions" / assignment.name).glob("*.html")), assignment.name
    text = _text(feedback / "partly_wrong" / QUIZ / f"{QUIZ}.html")
    source = nbformat.read(course["root"] / "solutions" / QUIZ / f"{QUIZ}.ipynb", 4)
    for n, letter in enumerate(course["right"], 1):
        call = next(
            node
            for node in ast.walk(ast.parse(_cell(source, f"q{n}_check").source))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "quiz.key"
        )
        shown = " ".join(ast.literal_eval(call.args[1]).split()[:10]) in text
        assert shown == (n in (1, 3)), f"q{n}: explanation shown = {shown}"
        if n not in (1, 3):
            assert f'q{n} = "{letter}" is right' not in text  # the right letter of a missed question stays hidden
        if n in (2, 4):  # answered wrong: why that option is wrong, and no other option's note
            wrong = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "wrong"))
            notes = {option: " ".join(why.split()[:10]) in text for option, why in wrong.items()}
            assert notes == {option: option == wrong_letter(letter) for option in wrong}, f"q{n}: {notes}"


def test_grades_csv(course):
    rows = {row[0]: row[1:] for row in csv.reader(open(course["csv"]))}
    header = rows.pop("learner")
    column = header.index(QUIZ)
    assert rows["(max)"][column] == f"{float(len(course['right']))}"
    assert rows["partly_wrong"][column] == "2.0" and rows["untouched"][column] == "0.0"
    assert rows["corrupt"][column] == rows["kernel_crash"][column] == "failed"
    assert rows["solutions"] == rows["(max)"]
