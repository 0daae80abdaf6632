"""The check in the learner's kernel: `run` (what every grading.check_<name> calls) and `exercise`, the
decorator that declares an exercise and makes its check_<name>.

    run(exercise, learner_fn, extra=False)
      1. the learner's function must take the exercise's arguments, and not be the reference itself;
      2. the judge (judge.py) computes the expected outputs with the package's own implementations, runs
         the learner's function on a copy of each case's inputs, with the reference switched off and a
         time limit (guard.py), and finds the first case that fails;
      3. that case fails the check with an AssertionError (a CheckFailed: a notebook shows it at the
         learner's line, without this module's frames) whose first lines say which case failed and
         give a hint (the hint of the usual mistake whose answer matches the learner's, else the
         exercise's own hint), each line short enough for `nbgrader validate` (MESSAGE_WIDTH); then
         the inputs, expected against got (shape, dtype, values);
      4. otherwise the speed case runs (speed.py; under autograding only outside the kernel, in sealed.py),
         and the check prints "nms: 7 cases passed (compared exactly)" and remembers the function as
         passed (save_component and plug_into_model use that).

A learner's function may call another exercise of theirs by its global name (roi_align calls the
learner's interpolation_weights). Before the cases run, each such helper gets its own visible check,
quietly; a helper that fails it is replaced, for this check only, by the package's version, and the
result says so: a check never blames correct code for an earlier helper's mistake.
"""

import copy
import functools
import inspect
import re
import textwrap
import types
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from mrcnn_course.teaching.autograding import autograding
from mrcnn_course.teaching.grading.exercise import Case, Exercise, every_exercise, register, versions
from mrcnn_course.teaching.grading.guard import (
    ReferenceSwitchedOff,
    TimeLimitExceeded,
    learner_traceback,
    raised_in_learner_code,
    time_limit,
)
from mrcnn_course.teaching.grading.judge import (
    CHANGED_AN_INPUT,
    RAISED,
    RAN_THE_REFERENCE,
    Failure,
    build_cases,
    difference,
    expected_outputs,
    first_failure,
    learner_function,
    own_components,
    run_cases,
    short,
    switched_off,
)
from mrcnn_course.teaching.grading.speed import MAX_RATIO, Timing, check_speed
from mrcnn_course.teaching.notebook_errors import CheckFailed, NotWrittenYet

SPEED_TIME_LIMIT = 120.0  # seconds for a speed case (two measurements): a function this slow is far too slow
# Functions that passed their checker in this session, by exercise name.
_PASSED: dict[str, Callable] = {}
# `nbgrader validate` cuts every line of a traceback at 87 characters, 4 of them its indent: the
# message's lines stay within this width (its first line also carries "AssertionError: ").
MESSAGE_WIDTH = 80

Check = TypeVar("Check", bound=Callable[..., None])


def exercise(**declaration: Any) -> Callable[[Check], Check]:
    """Declare an exercise on its check function, in the exercises_<stage>.py of its stage:

        @exercise(cases=..., hint=..., steps=..., mistakes=..., fast=..., atol=..., torchvision_names=...)
        def check_nms(nms: Callable, extra: bool = False) -> None:
            '''Check your nms(boxes, scores, iou_threshold) -> Tensor[K] int64 against the reference.'''

    The keywords are Exercise's fields (exercise.py); the name is the function's, less "check_". The
    exercise goes into the registry (EXERCISES, or HELPER_EXERCISES when it names its reference), and
    the check function runs it: the def's body stays empty, its signature and docstring are what a
    learner reads (Shift-Tab)."""

    def declare(check: Check) -> Check:
        declared = register(Exercise(check.__name__.removeprefix("check_"), **declaration))

        @functools.wraps(check)
        def checked(fn: Callable, extra: bool = False) -> None:
            __tracebackhide__ = True  # IPython and pytest skip this frame
            run(declared, fn, extra)

        return checked  # type: ignore[return-value]  # the same signature, as functools.wraps says

    return declare


def passed(name: str) -> Callable | None:
    """The function that last passed check_<name> in this session, or None."""
    return _PASSED.get(name)


def _refuse_the_reference(name: str, fn: Callable) -> None:
    module = getattr(fn, "__module__", "") or ""
    if module.split(".")[0] in ("mrcnn_course", "torchvision"):
        raise CheckFailed(
            _wrapped(
                f"check_{name} checks YOUR function, but this is {module}.{fn.__name__}: "
                f"write your own {name} in the notebook and pass that.",
                first=len("AssertionError: "),
            )
        )


def _check_module_class(name: str, given: Any) -> None:
    """A module exercise's class runs as its forward on the package's head (its layers, not the learner's class):
    super() and the class's other methods are not there, so say so before they fail inside the check."""
    cls = type(given) if isinstance(given, nn.Module) else given
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or "forward" not in vars(cls):
        return
    code = vars(cls)["forward"].__code__
    others = [n for n, v in vars(cls).items() if callable(v) and n != "forward" and not n.startswith("__")]
    if "super" in code.co_names or others:
        what = "calls super()" if "super" in code.co_names else f"uses {', '.join(others)} of your class"
        raise CheckFailed(
            _wrapped(
                f"check_{name}: your forward {what}, but it runs on the model's own head, as the function "
                f"{name}(head, ...): write it with the layers the constructor made (self.<layer>(x)) and torch "
                f"functions only; the package's forward is the reference, out of reach while it is checked.",
                first=len("AssertionError: "),
            )
        )


def _check_signature(name: str, fn: Callable, reference: Callable) -> None:
    if not callable(fn):
        raise CheckFailed(
            _wrapped(
                f"check_{name} needs your function, got {type(fn).__name__}: pass {name} itself "
                f"(check_{name}({name})), without calling it.",
                first=len("AssertionError: "),
            )
        )
    # the arguments the model passes: not a keyword-only switch of the package's own (the ablation lab's)
    reference_parameters = inspect.signature(reference).parameters.values()
    parameters = [p.name for p in reference_parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    try:
        inspect.signature(fn).bind(*parameters)
    except TypeError:
        raise CheckFailed(
            _wrapped(
                f"check_{name}: your {name} takes {inspect.signature(fn)}, but the model calls "
                f"{name}({', '.join(parameters)}): give it exactly these arguments.",
                first=len("AssertionError: "),
            )
        ) from None


def _inputs_text(case: Case, names: list[str]) -> str:
    return "\n".join(f"    {n} = {case.notes.get(n) or short(v)}" for n, v in zip(names, case.args))


def _learner_helpers(exercise: Exercise, fn: Callable) -> dict[str, tuple[Exercise, Callable]]:
    """The learner's own functions that `fn` calls by a global name and that are exercises too."""
    code, scope = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or scope is None:
        return {}
    names, codes = set(), [code]
    while codes:  # fn's code and the functions defined inside it
        current = codes.pop()
        names.update(current.co_names)
        codes += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    every = every_exercise()
    found = {}
    for name in sorted(names & set(every) - {exercise.component}):
        helper = scope.get(name)
        module = (getattr(helper, "__module__", "") or "").split(".")[0]
        if callable(helper) and module not in ("mrcnn_course", "torchvision"):
            found[name] = (every[name], helper)
    return found


def visible_check_failure(exercise: Exercise, fn: Callable) -> str | None:
    """Why `fn` fails the exercise's visible cases ("it fails its own check, case '...'"), or None if it passes.
    Quiet, and without the speed case: the re-check of a learner's helper, or of a saved component
    (learner.load_components), which passed its speed case when it was checked in its lesson."""
    failure = _judged(exercise, fn, build_cases(exercise))
    if failure is None:
        return None
    if isinstance(failure.outcome.error, NotImplementedError):
        return "it is not written yet"
    return f"it fails its own check, case '{failure.case.name}'"


def _failing_helpers(exercise: Exercise, fn: Callable) -> dict[str, str]:
    """The learner's helpers (see _learner_helpers) that fail their own visible check: name -> why."""
    verdicts = {name: visible_check_failure(*found) for name, found in _learner_helpers(exercise, fn).items()}
    return {name: why for name, why in verdicts.items() if why is not None}


def _judged(exercise: Exercise, fn: Callable, cases: list, replaced: dict | None = None) -> Failure | None:
    """The judge's verdict on `fn` (judge.py): the first failing case, or None. `replaced` (name -> function)
    rebinds names in fn's globals for the run (a failing helper's reference)."""
    expected = expected_outputs(exercise, cases)
    scope = getattr(fn, "__globals__", {})
    saved = {name: scope[name] for name in replaced or {}}
    scope.update(replaced or {})
    try:
        return first_failure(exercise, cases, expected, run_cases(exercise, fn, cases))
    finally:
        scope.update(saved)


def has_speed_case(exercise: Exercise) -> bool:
    """Whether the exercise is timed (speed.py): a helper or train_step is not (timed inside what uses it), nor is
    a component's first version when a fast one follows (nms)."""
    return exercise.reference is None and versions(exercise.writes)[-1] is exercise


def speed_case(
    exercise: Exercise, fn: Callable, reference: Callable | None = None, package_seconds: float | None = None
) -> tuple[Timing | None, str | None]:
    """The speed case of a component that runs in training (speed.py): (timing, failure message or None).
    `reference`: the package's function, if taken before any learner code ran, and `package_seconds` its time per
    call, measured once per grading run (sealed.py)."""
    if not has_speed_case(exercise):
        return None, None
    name = exercise.component
    stop = f"check_{name} stopped your {name} while timing it: it is far too slow for training (see the hint)"
    with time_limit(SPEED_TIME_LIMIT, stop):
        try:
            return check_speed(
                name,
                exercise.writes,
                reference or exercise.reference_function(),
                fn,
                lambda: switched_off(exercise, fn),
                exercise.speed_advice(),
                package_seconds,
            )
        except TimeLimitExceeded:
            return None, f"check_{name}: speed case failed: {stop}. {exercise.speed_advice()}."


def run(exercise: Exercise, fn: Callable, extra: bool = False) -> None:
    """Check the learner's `fn` on the exercise's cases (and the hidden ones if extra); see the module doc."""
    __tracebackhide__ = True  # IPython and pytest show only the line that raises: the message says it all
    name = exercise.component
    reference = exercise.reference_function()
    _check_module_class(name, fn)
    fn = learner_function(fn)  # a module exercise's class: its forward
    _check_signature(name, fn, reference)
    _refuse_the_reference(name, fn)
    names = list(inspect.signature(reference).parameters)
    cases = build_cases(exercise, extra)
    failing = _failing_helpers(exercise, fn)
    replaced = {helper: every_exercise()[helper].reference_function() for helper in failing}
    failure = _judged(exercise, fn, cases, replaced)
    helpers_note = [
        f"your {helper} was replaced by the package's for this check: {why}. Fix it and run "
        f"check_{helper}, then this check again."
        for helper, why in failing.items()
    ]
    if failure is None:
        # at autograding the re-check outside the kernel times it, against the package's time of the grading run
        timing, slow = (None, None) if extra or autograding() else speed_case(exercise, fn)
        if slow:  # its paragraphs in lines nbgrader validate shows whole, the verdict first
            _PASSED.pop(name, None)
            paragraphs = [part.strip() for part in slow.split("\n")]
            lines = [_wrapped(paragraphs[0], first=len("AssertionError: "))]
            lines += [_wrapped(part, indent="  ") for part in paragraphs[1:]]
            raise CheckFailed("\n".join(lines)) from None
        hidden = sum(c.extra for c in cases)
        including = f", {hidden} of them hidden" if hidden else ""
        fast = (
            f"; speed {timing.ratio:.1f}x the package's on a training step's inputs (limit {MAX_RATIO:g}x)"
            if timing
            else ""
        )
        print(f"{name}: {len(cases)} cases passed{including} ({exercise.tolerance_text()}{fast})")
        if failing:  # right, but it runs with a broken helper in the model: not plugged in or saved yet
            _PASSED.pop(name, None)
            print(_wrapped(" ".join(helpers_note) + f" (Until then your {name} is not used in the model.)"))
        else:
            _PASSED[name] = fn
        return
    _PASSED.pop(name, None)
    error = failure.outcome.error
    if isinstance(error, NotImplementedError) and raised_in_learner_code(error):
        raise NotWrittenYet(
            _wrapped(
                f"{name} is not written yet: replace `raise NotImplementedError()` with your code, "
                f"run its cell, then this one again.",
                first=len("NotImplementedError: "),
            )
        ) from None
    message = _explain(exercise, failure, names, helpers_note)
    raise CheckFailed(message) from None


FAILED_CASE = re.compile(r"check_(\w+):\s+case\s+'(.*?)'\s+failed[.:]", re.DOTALL)  # "failed." or "failed: ... raised"


def failed_case(message: str) -> tuple[str, str] | None:
    """(exercise, case) named by a check's failure message (its first lines may wrap), or None."""
    found = FAILED_CASE.search(message)
    return (found.group(1), " ".join(found.group(2).split())) if found else None


def _wrapped(text: str, indent: str = "", first: int = 0) -> str:
    """`text` in lines of at most MESSAGE_WIDTH, each indented (the first line `first` characters shorter)."""
    lines = textwrap.wrap(text, MESSAGE_WIDTH, initial_indent=" " * first + indent, subsequent_indent=indent + "  ")
    return "\n".join([lines[0][first:], *lines[1:]])


def _explain(exercise: Exercise, failure: Failure, names: list[str], notes: list[str] | tuple = ()) -> str:
    """The failure's message: the verdict and the hint first, in short lines; then the details."""
    name, case, outcome, detail = exercise.component, failure.case, failure.outcome, failure.difference
    verdict = f"check_{name}: case '{case.name}' failed."
    hint, details = exercise.hint, ["  inputs:", _inputs_text(case, names)]
    if outcome.kind in (RAISED, RAN_THE_REFERENCE):
        error = outcome.error or ReferenceSwitchedOff(
            f"your {name} ran the reference ({outcome.detail}), bound before the check switched it off: "
            f"write the computation yourself"
        )
        what = "was stopped" if isinstance(error, TimeLimitExceeded) else f"raised {type(error).__name__}"
        verdict = f"check_{name}: case '{case.name}' failed: your {name} {what}."
        details += [f"  your {name} {what}; your code, where it was:"]
        details += ["    " + line for line in learner_traceback(error).splitlines()]
    elif outcome.kind == CHANGED_AN_INPUT:
        hint = (
            f"your {name} changed its input {outcome.detail} in place: the model still needs it. "
            f"Work on a copy (dict(target), boxes.clone()) or build new tensors."
        )
    elif detail is not None:
        got = outcome.output
        details += [
            f"  in your {detail.where}:",
            f"    expected: {detail.expected}",
            f"    got:      {detail.got}",
            f"    {detail.detail}",
        ]
        if got is None:
            hint = "your function returned None: did you forget the `return` statement?"
        else:
            hint = _matching_mistake(exercise, case, got) or hint
    lines = [_wrapped(verdict, first=len("AssertionError: "))]
    lines += [_wrapped(f"hint: {hint}", "  ")] if hint else []
    lines += [_wrapped(note, "  ") for note in notes]
    return "\n".join(lines + details)


def _matching_mistake(exercise: Exercise, case: Case, got: Any) -> str | None:
    """The hints of the usual mistakes whose answer is the learner's (computed with the reference)."""
    hints = []
    with own_components():
        for mistake in exercise.mistakes:
            try:
                wrong = exercise.result(mistake.answer, copy.deepcopy(case.args))
            except Exception:  # this mistake does not apply to this case
                continue
            if difference(wrong, got, exercise.atol, exercise.rtol) is None:
                hints.append(mistake.hint)
    if len(hints) > 1:
        return "your answer is what each of these mistakes gives: " + " ".join(
            f"({i}) {h}" for i, h in enumerate(hints, 1)
        )
    return f"your answer is what this mistake gives: {hints[0]}" if hints else None
