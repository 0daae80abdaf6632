"""mrcnn_course.teaching.grading.exercise: every registered exercise's checker (the reference passes, torchvision
agrees with every expected answer, each usual mistake gets its hint), declared once and exported as its check.
What a check says (core.py), the guard around the learner's code (guard.py) and the learner's components
(learner.py) are tested in test_core.py, test_guard.py and test_learner.py."""

import copy
import inspect

import pytest
from conftest import words

from mrcnn_course.model import components, torchvision_ops
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading import exercise
from mrcnn_course.teaching.grading.core import has_speed_case
from mrcnn_course.teaching.grading.judge import build_cases, difference

EXERCISES = list(grading.EXERCISES.values())
IDS = [e.component for e in EXERCISES]


def answering(answers):
    """A learner's function that gives these answers, one per call, whatever the arguments."""
    answers = iter(answers)

    def learner(*args):
        return next(answers)

    return learner


def hidden_and_visible(exercise):
    return [c for c in build_cases(exercise, extra=True) if c.extra], build_cases(exercise)


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_the_reference_passes_every_case_and_says_what_it_compared(exercise, capsys, as_learner):
    fn = as_learner(exercise.reference_function())
    grading.run(exercise, fn, extra=True)
    hidden, visible = hidden_and_visible(exercise)
    assert hidden and len(visible) >= 3, "every exercise needs visible and hidden cases"
    printed = capsys.readouterr().out
    assert f"{exercise.component}: {len(visible) + len(hidden)} cases passed, {len(hidden)} of them hidden" in printed
    assert grading.passed(exercise.component) is fn


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_torchvision_agrees_with_every_expected_answer(exercise):
    """The second opinion: the expected answers are right, not just the package's."""
    own = exercise.reference_function()
    theirs = getattr(torchvision_ops, exercise.writes)  # nms_fast writes nms again
    for case in build_cases(exercise, extra=True):
        expected = own(*copy.deepcopy(case.args))
        with components.using(**{n: "torchvision" for n in components.NAMES}):
            got = theirs(*copy.deepcopy(case.args))
        got = tuple(got) if isinstance(expected, tuple) else got
        compare = case.compare or (lambda e, g, c: difference(e, g, exercise.atol, exercise.rtol))
        assert compare(expected, got, case) is None, f"case {case.name!r}: {compare(expected, got, case)}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_each_usual_mistake_is_caught_with_its_hint(exercise):
    cases = build_cases(exercise, extra=True)
    own = exercise.reference_function()
    rights = [own(*copy.deepcopy(case.args)) for case in cases]
    for mistake in exercise.mistakes:
        answers, differs = [], False
        for case, right in zip(cases, rights):
            try:
                wrong = mistake.answer(*copy.deepcopy(case.args))
            except Exception:  # the mistake does not apply here: answer right
                wrong = right
            differs = differs or difference(right, wrong, exercise.atol, exercise.rtol) is not None
            answers.append(wrong)
        assert differs, f"no case shows the mistake {mistake.hint!r}"
        with pytest.raises(AssertionError) as failure:
            grading.run(exercise, answering(answers), extra=True)
        assert "your answer is what" in str(failure.value) and words(mistake.hint) in words(str(failure.value))


def test_every_exercise_is_declared_once_and_exported_as_its_check():
    """The registry, the stages' __all__ and grading.check_<name> name the same exercises, each with a real
    function (signature and docstring) that a learner's Shift-Tab shows."""
    stages = [m for name, m in vars(grading).items() if name.startswith("exercises_")]
    exported = [check for stage in stages for check in stage.__all__]
    every = exercise.every_exercise()
    assert sorted(exported) == sorted(f"check_{name}" for name in every)
    for name in every:
        check = getattr(grading, f"check_{name}")
        assert list(inspect.signature(check).parameters) == [name, "extra"] and check.__doc__


WRITTEN_TWICE = [e for e in EXERCISES if len(exercise.versions(e.writes)) > 1]  # nms and nms_fast, ...


def test_a_component_written_twice_is_timed_in_its_fast_version_only():
    assert [e.component for e in exercise.versions("nms")] == ["nms", "nms_fast"]
    assert [e.component for e in exercise.versions("roi_align")] == ["roi_align", "roi_align_fast"]
    for first, fast in (exercise.versions(name) for name in ("nms", "roi_align")):
        assert not has_speed_case(first) and has_speed_case(fast)
        assert fast.reference_function() is first.reference_function() is components.COMPONENTS[first.component].own
        assert fast.speed_advice().startswith(fast.steps[0].rstrip("."))  # the advice is its own first idea
        assert f"grading.hint({fast.component!r})" in fast.speed_advice()


@pytest.mark.parametrize("exercise", WRITTEN_TWICE, ids=[e.component for e in WRITTEN_TWICE])
def test_each_usual_mistake_of_a_version_shows_on_a_visible_and_a_hidden_case_with_its_hint(exercise):
    """The catalogue's promise: every mistake fails a visible case (test_visible_cases.py checks that check's
    message) and a hidden case with other values; here a learner who makes it only on the hidden cases fails
    the hidden check, with the mistake's hint."""
    cases = build_cases(exercise, extra=True)
    own = exercise.reference_function()
    for mistake in exercise.mistakes:
        answers, shown = [], set()
        for case in cases:
            right = own(*copy.deepcopy(case.args))
            try:
                wrong = mistake.answer(*copy.deepcopy(case.args))
            except Exception:  # the mistake does not apply here: answer right
                wrong = right
            if difference(right, wrong, exercise.atol, exercise.rtol) is not None:
                shown.add(case.extra)
            answers.append(wrong if case.extra else right)
        assert shown == {False, True}, f"{mistake.hint!r}: shown on a visible and a hidden case? {shown}"
        with pytest.raises(AssertionError) as failure:
            grading.run(exercise, answering(answers), extra=True)
        assert words(mistake.hint) in words(str(failure.value))


def test_the_fast_version_is_checked_with_every_version_of_its_component_out_of_reach():
    def nms_fast(boxes, scores, iou_threshold):
        return components.nms(boxes, scores, iou_threshold)

    with pytest.raises(AssertionError, match="components.nms is switched off while check_nms_fast runs"):
        grading.check_nms_fast(nms_fast)
    assert components.active("nms") == "own"
