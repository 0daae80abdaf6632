"""A simulated class with a known answer, for the tests of parallel grading and of the class dashboard.

In a temporary copy of the course with two quizzes and one short lesson (90_boxes: box_iou and nms,
the cells of lesson 03, so that a kernel grades it in seconds), seven learners hand in work:

    ada   everything right
    ben   box_iou without the clamp; quiz_03 with two wrong answers
    cyd   box_iou without the clamp and nms dropping IoU == threshold; quiz_00 not handed in
    dee   the lesson untouched (NotImplementedError); quiz_03 not handed in
    eve   nms dropping IoU == threshold; quiz_00 with one wrong answer
    fay   a lesson notebook that is not JSON (autograding fails); quizzes right
    gus   only quiz_00 (right)

`expected(...)` says what a correct reading of the gradebook finds: scores, pass rates, the checker
cases that fail (found by running the course's checkers on the same functions in this process),
who has not handed in what.
"""

import re
import shutil
from pathlib import Path

import nbformat

from mrcnn_course.teaching import course

ROOT = Path(__file__).resolve().parents[1]
LESSON = "90_boxes"
QUIZZES = ["quiz_00_pipeline", "quiz_03_rpn"]
LEARNERS = ["ada", "ben", "cyd", "dee", "eve", "fay", "gus"]
NO_CLAMP = ("sides = (bottom_right - top_left).clamp(min=0)", "sides = bottom_right - top_left")
NOT_STRICT = ("order = order[overlaps <= iou_threshold]", "order = order[overlaps < iou_threshold]")
# learner -> the mistakes in their lesson (None: not handed in; "untouched"; "corrupt")
LESSON_WORK = {
    "ada": [],
    "ben": [NO_CLAMP],
    "cyd": [NO_CLAMP, NOT_STRICT],
    "dee": "untouched",
    "eve": [NOT_STRICT],
    "fay": "corrupt",
    "gus": None,
}
# learner -> quiz -> the questions answered wrong (None: not handed in)
QUIZ_WORK = {
    "ada": {"quiz_00_pipeline": [], "quiz_03_rpn": []},
    "ben": {"quiz_00_pipeline": [], "quiz_03_rpn": [2, 4]},
    "cyd": {"quiz_00_pipeline": None, "quiz_03_rpn": []},
    "dee": {"quiz_00_pipeline": [], "quiz_03_rpn": None},
    "eve": {"quiz_00_pipeline": [1], "quiz_03_rpn": []},
    "fay": {"quiz_00_pipeline": [], "quiz_03_rpn": []},
    "gus": {"quiz_00_pipeline": [], "quiz_03_rpn": None},
}
CHECKS = {"box-iou": "check-box-iou", "nms": "check-nms"}


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _lesson_source() -> nbformat.NotebookNode:
    """Lesson 03's box_iou and nms exercises and their checks, after one import cell."""
    rpn = nbformat.read(ROOT / "solutions" / "03_rpn" / "03a_anchors_and_boxes.ipynb", 4)
    cells = [
        nbformat.v4.new_code_cell(
            "import torch\n\nfrom mrcnn_course.model import components\nfrom mrcnn_course.teaching import grading"
        )
    ]
    for exercise, check in CHECKS.items():
        cells += [c for c in rpn.cells if _grade_id(c) in (exercise, check)]
    return nbformat.v4.new_notebook(cells=cells, metadata=rpn.metadata)


def _right_letters(quiz: str) -> list[str]:
    source = nbformat.read(ROOT / "solutions" / quiz / f"{quiz}.ipynb", 4)
    answers = [c for c in source.cells if re.fullmatch(r"q\d+_answer", _grade_id(c) or "")]
    return [re.search(r'= "([A-D])"', c.source.split("### BEGIN SOLUTION")[1]).group(1) for c in answers]


def wrong_letter(letter: str) -> str:
    return "A" if letter != "A" else "B"


def hand_in(root: Path, learner: str, assignment: str, nb=None, text: str | None = None) -> None:
    folder = root / "grading" / "submitted" / learner / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{assignment}.ipynb"
    path.write_text(text) if text is not None else nbformat.write(nb, path)


def make_course(root: Path) -> None:
    """The course's configuration, the simulated lesson and the two quizzes, released, with the class's work
    in grading/submitted (nothing graded yet)."""
    (root / "solutions" / LESSON).mkdir(parents=True)
    nbformat.write(_lesson_source(), root / "solutions" / LESSON / f"{LESSON}.ipynb")
    for quiz in QUIZZES:
        shutil.copytree(ROOT / "solutions" / quiz, root / "solutions" / quiz, ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "nbgrader_config.py", root)
    course.release(root)
    source = nbformat.read(root / "solutions" / LESSON / f"{LESSON}.ipynb", 4)
    released = nbformat.read(root / "lessons" / LESSON / f"{LESSON}.ipynb", 4)
    for learner, work in LESSON_WORK.items():
        if work == "untouched":
            hand_in(root, learner, LESSON, released)
        elif work == "corrupt":
            hand_in(root, learner, LESSON, text='{"cells": [ this is not JSON')
        elif work is not None:
            nb = nbformat.reads(nbformat.writes(source), 4)  # the instructor's version, then the mistakes
            for cell in nb.cells:
                for right, wrong in work:
                    cell.source = cell.source.replace(right, wrong)
            hand_in(root, learner, LESSON, nb)
    for quiz in QUIZZES:
        letters = _right_letters(quiz)
        released = nbformat.read(root / "quizzes" / quiz / f"{quiz}.ipynb", 4)
        for learner, quizzes in QUIZ_WORK.items():
            if quizzes[quiz] is None:
                continue
            nb = nbformat.reads(nbformat.writes(released), 4)
            for cell in nb.cells:
                if match := re.fullmatch(r"q(\d+)_answer", _grade_id(cell) or ""):
                    n = int(match.group(1))
                    letter = wrong_letter(letters[n - 1]) if n in quizzes[quiz] else letters[n - 1]
                    cell.source = f'q{n} = "{letter}"'
            hand_in(root, learner, quiz, nb)


def _failed_case(exercise: str, mistakes: list[tuple[str, str]]) -> str | None:
    """The case the course's checker names when it fails this learner's function (run here, in this
    process, as the hidden test calls it), or None when the function passes."""
    import torch

    from mrcnn_course.model import components
    from mrcnn_course.teaching import grading

    code = next(c for c in _lesson_source().cells if _grade_id(c) == exercise).source
    for right, wrong in mistakes:
        code = code.replace(right, wrong)
    namespace = {"torch": torch, "components": components}
    exec(code, namespace)
    name = exercise.replace("-", "_")
    try:
        getattr(grading, f"check_{name}")(namespace[name], extra=True)
    except AssertionError as failure:
        return grading.core.failed_case(str(failure))[1]
    return None


def expected() -> dict:
    """What the gradebook and the autograded notebooks of make_course's class say, once graded."""
    quiz_points = {quiz: len(_right_letters(quiz)) for quiz in QUIZZES}
    scores: dict[str, dict[str, float | None]] = {LESSON: {}, **{quiz: {} for quiz in QUIZZES}}
    failed_cases: dict[tuple[str, str], int] = {}
    passes = {check: 0 for check in CHECKS.values()}
    for learner, work in LESSON_WORK.items():
        if work is None:
            continue
        if work == "corrupt":
            scores[LESSON][learner] = None
            continue
        if work == "untouched":  # "box_iou is not written yet": a failure that names no case
            scores[LESSON][learner] = 0.0
            continue
        score = 0.0
        for exercise, check in CHECKS.items():
            case = _failed_case(exercise, work)
            if case is None:
                score += 2
                passes[check] += 1
            else:
                key = (exercise.replace("-", "_"), case)
                failed_cases[key] = failed_cases.get(key, 0) + 1
        scores[LESSON][learner] = score
    lesson_submissions = sum(work is not None for work in LESSON_WORK.values())
    pass_rates = {(LESSON, check): n / lesson_submissions for check, n in passes.items()}
    for quiz in QUIZZES:
        handed_in = {learner: q[quiz] for learner, q in QUIZ_WORK.items() if q[quiz] is not None}
        for learner, wrong in handed_in.items():
            scores[quiz][learner] = float(quiz_points[quiz] - len(wrong))
        for n in range(1, quiz_points[quiz] + 1):
            right = sum(n not in wrong for wrong in handed_in.values())
            pass_rates[(quiz, f"q{n}_check")] = right / len(handed_in)
    missing = {
        learner: sorted(
            [LESSON] * (LESSON_WORK[learner] is None) + [quiz for quiz in QUIZZES if QUIZ_WORK[learner][quiz] is None]
        )
        for learner in LEARNERS
    }
    return {
        "scores": scores,
        "max_scores": {LESSON: 4.0, **{quiz: float(points) for quiz, points in quiz_points.items()}},
        "pass_rates": pass_rates,
        "failed_cases": failed_cases,
        "missing": {learner: names for learner, names in missing.items() if names},
    }
