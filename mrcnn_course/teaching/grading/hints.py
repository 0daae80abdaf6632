"""Hints on demand: the steps of each exercise, out of sight until the learner asks.

An exercise's docstring states its contract (what goes in, what comes out, the rules and traps), so a
learner can try it as a problem first; its steps are declared with it (Exercise.steps, in
exercises_<stage>.py):

    grading.hint("nms")       # every step
    grading.hint("nms", 2)    # the first two only

The steps say what to compute and which torch functions help, not the code: a learner who follows
them still writes each line (tests/teaching/grading/test_hints.py checks that no step copies a solution line).
"""

import textwrap

from mrcnn_course.teaching.grading.exercise import every_exercise


def hint(name: str, steps: int | None = None) -> None:
    """Print the numbered steps of exercise `name` (all, or the first `steps`)."""
    every = every_exercise()
    if name not in every:
        raise ValueError(f"no exercise named {name!r}; the exercises: {', '.join(every)}")
    shown = every[name].steps[:steps]
    print(f"{name}, step by step ({len(shown)} of {len(every[name].steps)}):")
    for number, step in enumerate(shown, 1):
        print(textwrap.fill(step, 100, initial_indent=f"  {number}. ", subsequent_indent="     "))
