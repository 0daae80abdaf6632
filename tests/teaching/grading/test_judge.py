"""mrcnn_course.teaching.grading.judge and its two drivers agree: every usual mistake of every catalogue, and
the reference, get the same verdict from the check in the learner's kernel (core.run) and from the re-check
at autograding (sealed.verify_notebook: a fresh process runs the notebook's definitions, as nbgrader_steps
runs it): pass or fail, and which case fails.

The notebook the re-check reads defines every learner below by importing this module (in the runner's
fresh process), with one grade cell per learner: `grading.check_nms(nms__mistake_1, extra=True)`."""

import copy
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from conftest import _as_learner

from mrcnn_course.model import components
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading import sealed
from mrcnn_course.teaching.grading.core import failed_case
from mrcnn_course.teaching.grading.judge import build_cases, own_components

HERE = Path(__file__).resolve().parent  # tests/teaching/grading; its parents[1] is tests/ (conftest.py)
EVERY = {**grading.EXERCISES, **grading.HELPER_EXERCISES}
LEARNERS = [f"{name}__reference" for name in EVERY] + [
    f"{name}__mistake_{i}" for name, exercise in EVERY.items() for i in range(len(exercise.mistakes))
]


def _answering(answers: list) -> Callable:
    """A learner's function that gives these answers, one per call, whatever the arguments (and again from
    the first: the re-check times a function whose outputs it has not judged yet)."""
    replies = itertools.cycle(answers)

    def learner(*args):
        return next(replies)

    return learner


def lesson_function(lesson: str, cell_id: str) -> Callable:
    """The function that a solution cell of a lesson defines (a learner who got it right)."""
    notebooks = sorted((HERE.parents[2] / "solutions" / lesson).glob("*.ipynb"))  # a lesson is one notebook or several
    cells = [c for path in notebooks for c in json.loads(path.read_text())["cells"]]
    namespace = {"torch": torch, "F": F, "components": components, "__name__": "__main__"}
    exec("".join(next(c for c in cells if c.get("id") == cell_id)["source"]), namespace)
    return namespace[cell_id.replace("-", "_")]


def learner(label: str) -> Callable:
    """The learner's function named `label`: `<exercise>__reference`, the reference's code in a function of
    the learner's; `<exercise>__mistake_<i>`, what the catalogue's i-th mistake gives on each case (the right
    answer where it does not apply; train_step's mistakes are steps of their own)."""
    name, kind = label.split("__")
    exercise = EVERY[name]
    if kind == "reference" and name == "interpolation_weights":  # its reference reads RoI Align's, switched off
        return lesson_function("04_roi_align", "interpolation-weights")
    if kind == "reference":
        return _as_learner(exercise.reference_function())
    mistake = exercise.mistakes[int(kind.removeprefix("mistake_"))]
    if exercise.outcome:
        return _as_learner(mistake.answer)
    answers = []
    with own_components():
        for case in build_cases(exercise, extra=True):
            try:
                answers.append(exercise.result(mistake.answer, copy.deepcopy(case.args)))
            except Exception:  # the mistake does not apply to this case
                answers.append(exercise.result(exercise.reference_function(), copy.deepcopy(case.args)))
    return _answering(answers)


def learners_of(exercise: str) -> dict[str, Callable]:
    """The learners of one exercise, by name."""
    return {label: learner(label) for label in LEARNERS if label.split("__")[0] == exercise}


def notebook() -> nbformat.NotebookNode:
    # one definitions cell per exercise: each stays well within the re-check's time limit for a cell
    # (sealed.CELL_TIME_LIMIT), where all the learners at once would not
    path = f"import sys\nsys.path[:0] = [{str(HERE)!r}, {str(HERE.parents[1])!r}]\nfrom test_judge import learners_of\n"
    definitions = [
        nbformat.v4.new_code_cell(
            path + f"globals().update(learners_of({exercise!r}))",
            metadata={"nbgrader": {"grade_id": f"learners-{exercise}", "solution": True, "grade": False}},
        )
        for exercise in dict.fromkeys(label.split("__")[0] for label in LEARNERS)
    ]
    checks = [
        nbformat.v4.new_code_cell(
            f"grading.check_{label.split('__')[0]}({label}, extra=True)",
            metadata={"nbgrader": {"grade_id": label, "solution": False, "grade": True, "points": 1}},
        )
        for label in LEARNERS
    ]
    return nbformat.v4.new_notebook(cells=[*definitions, *checks])


@pytest.fixture(scope="module")
def rechecked(tmp_path_factory) -> dict[str, str]:
    """grade cell (learner) -> why the re-check at autograding fails it; passing learners are not in it."""
    return sealed.verify_notebook(notebook(), tmp_path_factory.mktemp("judge"))


def kernel_verdict(label: str, capsys) -> str | None:
    """The failing case's name as the check in the kernel reports it, or None if it passes."""
    name = label.split("__")[0]
    try:
        grading.run(EVERY[name], learner(label), extra=True)
    except AssertionError as failure:
        found = failed_case(str(failure))
        assert found is not None, str(failure)
        return found[1]
    finally:
        capsys.readouterr()
    return None


@pytest.mark.parametrize("label", LEARNERS)
def test_the_kernel_check_and_the_recheck_give_the_same_verdict(label, rechecked, capsys):
    in_kernel = kernel_verdict(label, capsys)
    at_autograding = rechecked.get(label)
    if label.endswith("__reference"):
        assert in_kernel is None and at_autograding is None, (in_kernel, at_autograding)
        return
    assert in_kernel is not None, "the check in the kernel let a usual mistake pass"
    assert at_autograding is not None, f"the re-check let a usual mistake pass (the kernel: case '{in_kernel}')"
    assert at_autograding.split("case '", 1)[1].startswith(f"{in_kernel}'"), (in_kernel, at_autograding)
