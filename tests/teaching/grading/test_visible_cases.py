"""Every rule an exercise states has a visible case (the README's "Writing an exercise"): each usual
mistake of every exercise's catalogue fails the VISIBLE check alone, the one a learner runs, so a
learner whose visible checks pass does not lose points to the hidden cases, which only repeat the same
rules with other values."""

import copy

import pytest

from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading.judge import build_cases, own_components

EXERCISES = {**grading.EXERCISES, **grading.HELPER_EXERCISES}
MISTAKES = [(exercise, mistake) for exercise in EXERCISES.values() for mistake in exercise.mistakes]


def words(text: str) -> str:
    return " ".join(text.split())


def answers_of(exercise, mistake, cases) -> list:
    """What the mistake gives on each case (the right answer where it does not apply)."""
    answers = []
    with own_components():
        for case in cases:
            right = exercise.result(exercise.reference_function(), copy.deepcopy(case.args))
            try:
                answers.append(exercise.result(mistake.answer, copy.deepcopy(case.args)))
            except Exception:  # the mistake does not apply to this case
                answers.append(right)
    return answers


@pytest.mark.parametrize("exercise, mistake", MISTAKES, ids=[f"{e.component}: {m.hint[:40]}" for e, m in MISTAKES])
def test_each_mistake_fails_the_visible_check_with_its_hint(exercise, mistake, as_learner):
    if exercise.outcome:  # train_step: the mistake is a step of its own, checked by what it leaves behind
        learner = as_learner(mistake.answer)
    else:
        replies = iter(answers_of(exercise, mistake, build_cases(exercise)))

        def learner(*args):
            return next(replies)

    with pytest.raises(AssertionError) as failure:
        grading.run(exercise, learner, extra=False)
    assert words(mistake.hint) in words(str(failure.value)), f"another hint: {failure.value}"


@pytest.mark.parametrize("exercise", EXERCISES.values(), ids=list(EXERCISES))
def test_hidden_cases_repeat_the_visible_rules(exercise):
    """Each hidden case is a visible rule with other values: no mistake of the catalogue is caught by a
    hidden case alone (the test above), and every exercise has hidden cases to catch hard-coding."""
    cases = build_cases(exercise, extra=True)
    assert any(c.extra for c in cases) and any(not c.extra for c in cases)
    assert len({c.name for c in cases}) == len(cases), "case names are what a learner reads: one each"


def test_the_five_usual_wrong_answers_are_in_the_catalogues():
    hints = {name: " ".join(m.hint for m in e.mistakes) for name, e in EXERCISES.items()}
    assert "score_thresh" in hints["filter_proposals"] and "EQUAL" in hints["filter_proposals"]
    assert "from above only" in hints["decode_boxes"]
    assert "outside [-1, length]" in hints["interpolation_weights"]
    assert "eps" in hints["map_levels"]
