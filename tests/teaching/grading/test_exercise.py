"""mrcnn_course.teaching.grading.exercise: every registered exercise's checker (the reference passes, torchvision
agrees with every expected answer, each usual mistake shows on a visible and a hidden case and gets its hint),
declared once and exported as its check.
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
from mrcnn_course.teaching.grading.judge import build_cases, compare, difference, expected_outputs, own_components

EXERCISES = list(grading.EXERCISES.values())
IDS = [e.component for e in EXERCISES]
EVERY = list(exercise.every_exercise().values())  # the components' and the helpers'


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


def test_a_component_written_twice_is_timed_in_its_fast_version_only():
    assert [e.component for e in exercise.versions("nms")] == ["nms", "nms_fast"]
    assert [e.component for e in exercise.versions("roi_align")] == ["roi_align", "roi_align_fast"]
    for first, fast in (exercise.versions(name) for name in ("nms", "roi_align")):
        assert not has_speed_case(first) and has_speed_case(fast)
        assert fast.reference_function() is first.reference_function() is components.COMPONENTS[first.component].own
        assert fast.speed_advice().startswith(fast.steps[0].rstrip("."))  # the advice is its own first idea
        assert f"grading.hint({fast.component!r})" in fast.speed_advice()


def answer(fn, reference, args: tuple):
    """What fn gives on these arguments; the reference's answer where fn does not apply (it raises)."""
    try:
        return fn(*copy.deepcopy(args))
    except Exception:
        return reference(*copy.deepcopy(args))


def learner_making(exercise, mistake, cases, as_learner):
    """A learner who is right on the visible cases and makes `mistake` on the hidden ones."""
    reference = exercise.reference_function()
    if exercise.outcome:  # a case compares what the function leaves behind (train_step): each call runs for real
        calls = iter([as_learner(mistake.answer if case.extra else reference) for case in cases])
        return lambda *args: next(calls)(*args)
    with own_components():
        return answering([answer(mistake.answer if case.extra else reference, reference, case.args) for case in cases])


def shown_on(exercise, mistake, cases, expected) -> set[bool]:
    """The kinds of case (False: visible, True: hidden) on which the mistake's answer fails the comparison."""
    shown = set()
    with own_components():
        for case, right in zip(cases, expected):
            try:
                wrong = exercise.result(mistake.answer, copy.deepcopy(case.args))
            except Exception:  # the mistake does not apply here
                continue
            if compare(exercise, case, right, wrong) is not None:
                shown.add(case.extra)
    return shown


@pytest.mark.parametrize("exercise", EVERY, ids=[e.component for e in EVERY])
def test_each_usual_mistake_shows_on_a_visible_and_a_hidden_case_and_the_hidden_check_gives_its_hint(
    exercise, as_learner
):
    """The catalogue's promise, for every exercise: each usual mistake fails a visible case (test_visible_cases.py
    checks that check's message) and a hidden case with other values, so that an answer that fits only the
    visible cases loses the hidden ones; a learner who makes it only on the hidden cases fails the hidden check
    with the mistake's hint."""
    assert exercise.mistakes, "every exercise catalogues its usual mistakes"
    cases = build_cases(exercise, extra=True)
    expected = expected_outputs(exercise, cases)
    for mistake in exercise.mistakes:
        shown = shown_on(exercise, mistake, cases, expected)
        assert shown == {False, True}, f"{mistake.hint!r}: shown on a visible and a hidden case? {shown}"
        with pytest.raises(AssertionError) as failure:
            grading.run(exercise, learner_making(exercise, mistake, cases, as_learner), extra=True)
        message = words(str(failure.value))
        assert "your answer is what" in message and words(mistake.hint) in message


def test_the_fast_version_is_checked_with_every_version_of_its_component_out_of_reach():
    def nms_fast(boxes, scores, iou_threshold):
        return components.nms(boxes, scores, iou_threshold)

    with pytest.raises(AssertionError, match="components.nms is switched off while check_nms_fast runs"):
        grading.check_nms_fast(nms_fast)
    assert components.active("nms") == "own"
