"""The machinery every checker shares: an Exercise (one component, its named cases, its hints) and
`run`, which checks a learner's function against the package's own and explains a failure.

    run(exercise, learner_fn, extra=False)
      1. the learner's function must take the component's arguments;
      2. the expected outputs are computed first, with the package's own implementations;
      3. the learner's function runs on a copy of each case's inputs, with the reference switched off
         and a time limit (guard.py);
      4. the first case that differs (or raises) fails the check with an AssertionError whose first
         lines say which case failed and give a hint (the hint of the usual mistake whose answer
         matches the learner's, else the exercise's own hint), each line short enough for
         `nbgrader validate` (MESSAGE_WIDTH); then the inputs, expected against got (shape, dtype,
         values);
      5. otherwise it prints "nms: 7 cases passed (compared exactly)" and remembers the function
         as passed (save_component and plug_into_model use that).

A learner's function may call another exercise of theirs by its global name (roi_align calls the
learner's interpolation_weights). Before the cases run, each such helper gets its own visible check,
quietly; a helper that fails it is replaced, for this check only, by the package's version, and the
result says so: a check never blames correct code for an earlier helper's mistake.
"""

import copy
import inspect
import re
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.teaching.grading.guard import (
    ReferenceSwitchedOff,
    TimeLimitExceeded,
    learner_traceback,
    raised_in_learner_code,
    reference_code,
    reference_noticed,
    reference_switched_off,
    time_limit,
)
from mrcnn_course.teaching.grading.speed import DEFAULT_FAST, MAX_RATIO, Timing, check_speed

SPEED_TIME_LIMIT = 120.0  # seconds for a speed case (two measurements): a function this slow is far too slow
# Functions that passed their checker in this session, by component name.
_PASSED: dict[str, Callable] = {}
# Every exercise, by name (filled as they are defined): the helpers a learner's function may call.
_BY_NAME: dict[str, "Exercise"] = {}
# `nbgrader validate` cuts every line of a traceback at 87 characters, 4 of them its indent: the
# message's lines stay within this width (its first line also carries "AssertionError: ").
MESSAGE_WIDTH = 80


@dataclass
class Case:
    """One input to the learner's function, with the name a learner reads when it fails."""

    name: str
    args: tuple
    notes: dict[str, str] = field(default_factory=dict)  # argument -> how to show it (e.g. a module)
    extra: bool = False  # hidden: run only with extra=True (the autograder's hidden tests)
    compare: Callable[[Any, Any, "Case"], "Difference | None"] | None = None  # instead of `difference`


@dataclass
class Mistake:
    """A usual mistake: `answer` computes what it gives (with the reference), `hint` explains it."""

    hint: str
    answer: Callable


@dataclass
class Exercise:
    """One component to write: its cases, hints, tolerance and torchvision's versions to switch off."""

    component: str
    cases: Callable[[], list[Case]]  # built on each call, deterministically
    hint: str  # shown when no Mistake matches: the usual pitfalls of this exercise
    mistakes: tuple[Mistake, ...] = ()
    atol: float = 0.0  # floats are close when |got - expected| <= atol + rtol * |expected|;
    rtol: float = 0.0  # integers and booleans are always compared exactly
    torchvision_names: tuple[str, ...] = ()  # e.g. ("torchvision.ops.nms",): out of reach during the check
    time_limit: float = 30.0  # seconds for all cases together
    # An exercise that is not a component (a helper such as interpolation_weights, or train_step) names its
    # reference here; `outcome(fn, args)` is what a case compares (default: fn(*args); train_step's is its
    # losses and the weights after its step). Mistakes' answers go through the same outcome.
    reference: Callable | None = None
    outcome: Callable[[Callable, tuple], Any] | None = None

    def __post_init__(self) -> None:
        _BY_NAME.setdefault(self.component, self)

    def reference_function(self) -> Callable:
        return self.reference or components.COMPONENTS[self.component].own

    def result(self, fn: Callable, args: tuple) -> Any:
        return self.outcome(fn, args) if self.outcome else fn(*args)

    def tolerance_text(self) -> str:
        if self.atol == self.rtol == 0:
            return "compared exactly"
        return f"floats within {self.atol:g} + {self.rtol:g} x |expected|, integers exactly"


@dataclass
class Difference:
    """Where the learner's output first differs from the expected one, and how."""

    where: str  # "output[1]['boxes']"
    expected: str
    got: str
    detail: str


def _number(x: float) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _values(t: Tensor) -> str:
    def nested(v):
        return "[" + ", ".join(nested(i) for i in v) + "]" if isinstance(v, list) else _number(v)

    return nested(t.tolist())


def short(value: Any) -> str:
    """A one-line description: "Tensor[2, 4] float32 [[0, 0, 10, 10], [1, 1, 5, 5]]"."""
    if isinstance(value, Tensor):
        text = f"Tensor[{', '.join(str(s) for s in value.shape)}] {str(value.dtype).replace('torch.', '')}"
        if value.numel() == 0:
            return text + " (empty)"
        return text + (" " + _values(value) if value.numel() <= 12 else "")
    if isinstance(value, nn.Module):
        return f"{type(value).__name__} ({sum(p.numel() for p in value.parameters())} parameters)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (Tensor, nn.Module)) for v in value):
        shown = ", ".join(short(v) if not isinstance(v, Tensor) else short(v).split(" [")[0] for v in value[:5])
        more = ", ..." if len(value) > 5 else ""
        return f"{type(value).__name__} of {len(value)}: {shown}{more}"
    return repr(value)


def difference(expected: Any, got: Any, atol: float, rtol: float, where: str = "output") -> Difference | None:
    """The first place where `got` differs from `expected` (None if they agree)."""

    def differs(detail: str) -> Difference:
        return Difference(where, short(expected), short(got), detail)

    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return differs(f"expected a tensor, got {type(got).__name__}")
        if got.shape != expected.shape:
            return differs(f"the shape differs: expected {tuple(expected.shape)}, got {tuple(got.shape)}")
        if got.dtype != expected.dtype:
            return differs(f"the dtype differs: expected {expected.dtype}, got {got.dtype}")
        exact = not expected.is_floating_point() or atol == rtol == 0
        got_cpu, expected_cpu = got.detach().cpu(), expected.detach().cpu()
        if exact:
            close = got_cpu == expected_cpu
            if expected.is_floating_point():
                close |= got_cpu.isnan() & expected_cpu.isnan()
        else:
            close = torch.isclose(got_cpu, expected_cpu, rtol=rtol, atol=atol, equal_nan=True)
        if bool(close.all()):
            return None
        first = tuple(int(i) for i in (~close).nonzero()[0])
        error = (got_cpu.double() - expected_cpu.double()).abs()
        tolerance = "compared exactly" if exact else f"tolerance {atol:g} + {rtol:g} x |expected|"
        return differs(
            f"the values differ: max abs error {_number(float(error.nan_to_num(float('inf')).max()))}; "
            f"first difference at index {first}: expected {_number(expected_cpu[first].item())}, "
            f"got {_number(got_cpu[first].item())} ({tolerance})"
        )
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return differs(f"expected a {type(expected).__name__} of {len(expected)}, got {type(got).__name__}")
        if len(got) != len(expected):
            return differs(f"expected {len(expected)} items, got {len(got)}")
        for i, (e, g) in enumerate(zip(expected, got)):
            found = difference(e, g, atol, rtol, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return differs(f"expected a dict, got {type(got).__name__}")
        if set(got) != set(expected):
            return differs(f"the keys differ: expected {sorted(expected)}, got {sorted(got)}")
        for key in expected:
            found = difference(expected[key], got[key], atol, rtol, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if got != expected:
        return differs(f"expected {expected!r}, got {got!r}")
    return None


def passed(name: str) -> Callable | None:
    """The function that last passed check_<name> in this session, or None."""
    return _PASSED.get(name)


def _refuse_the_reference(name: str, fn: Callable) -> None:
    module = getattr(fn, "__module__", "") or ""
    if module.split(".")[0] in ("mrcnn_course", "torchvision"):
        raise AssertionError(
            _wrapped(
                f"check_{name} checks YOUR function, but this is {module}.{fn.__name__}: "
                f"write your own {name} in the notebook and pass that.",
                first=len("AssertionError: "),
            )
        )


def _check_signature(name: str, fn: Callable, reference: Callable) -> None:
    if not callable(fn):
        raise AssertionError(
            _wrapped(
                f"check_{name} needs your function, got {type(fn).__name__}: pass {name} itself "
                f"(check_{name}({name})), without calling it.",
                first=len("AssertionError: "),
            )
        )
    parameters = list(inspect.signature(reference).parameters)
    try:
        inspect.signature(fn).bind(*parameters)
    except TypeError:
        raise AssertionError(
            _wrapped(
                f"check_{name}: your {name} takes {inspect.signature(fn)}, but the model calls "
                f"{name}({', '.join(parameters)}): give it exactly these arguments.",
                first=len("AssertionError: "),
            )
        ) from None


def _changed_argument(originals: tuple, given: tuple, names: list[str]) -> str | None:
    for name, before, after in zip(names, originals, given):
        if isinstance(before, (Tensor, dict, list, tuple)):
            found = difference(before, after, 0.0, 0.0, name)
            if found:
                return found.where
    return None


def _inputs_text(case: Case, names: list[str]) -> str:
    return "\n".join(f"    {n} = {case.notes.get(n) or short(v)}" for n, v in zip(names, case.args))


def build_cases(exercise: Exercise, extra: bool = False) -> list[Case]:
    """The exercise's cases (with the hidden ones if extra), the same on every call."""
    with torch.random.fork_rng(devices=[]):  # the cases' random draws leave the learner's generator alone
        torch.manual_seed(0)
        return [c for c in exercise.cases() if extra or not c.extra]


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
    found = {}
    for name in sorted(names & set(_BY_NAME) - {exercise.component}):
        helper = scope.get(name)
        module = (getattr(helper, "__module__", "") or "").split(".")[0]
        if callable(helper) and module not in ("mrcnn_course", "torchvision"):
            found[name] = (_BY_NAME[name], helper)
    return found


def _failing_helpers(exercise: Exercise, fn: Callable) -> dict[str, str]:
    """The learner's helpers (see _learner_helpers) that fail their own visible check: name -> why."""
    failing = {}
    for name, (helper_exercise, helper) in _learner_helpers(exercise, fn).items():
        cases = build_cases(helper_exercise)
        failure, case, _ = _first_failure(helper_exercise, helper, cases)
        if failure is not None:
            failing[name] = (
                "it is not written yet"
                if failure[0] == "raised" and isinstance(failure[1], NotImplementedError)
                else f"it fails its own check, case '{case.name}'"
            )
    return failing


def _first_failure(exercise: Exercise, fn: Callable, cases: list[Case], replaced: dict | None = None) -> tuple:
    """Run `fn` on the cases: (failure, case, got) of the first that fails, failure None if none does.
    `replaced` (name -> function) rebinds names in fn's globals for the run (a helper's reference)."""
    reference = exercise.reference_function()
    names = list(inspect.signature(reference).parameters)
    with components.using(**{n: components.OWN for n in components.NAMES}):
        expected = [exercise.result(reference, copy.deepcopy(c.args)) for c in cases]
    stop = (
        f"check_{exercise.component} stopped your {exercise.component} after {exercise.time_limit:g} s: does a "
        f"loop never end, or loop in Python over every element? (the cases are small)"
    )
    scope = getattr(fn, "__globals__", {})
    saved = {name: scope[name] for name in replaced or {}}
    scope.update(replaced or {})
    code = reference_code(exercise.component, exercise.torchvision_names, reference)
    try:
        with (
            reference_switched_off(exercise.component, exercise.torchvision_names, fn),
            time_limit(exercise.time_limit, stop),
            reference_noticed(code) as reached,  # also a reference captured before the check, any route
        ):
            for case, want in zip(cases, expected):
                given = copy.deepcopy(case.args)
                try:
                    got = exercise.result(fn, given)
                except Exception as error:  # the learner's bug (or the time limit): report their line
                    return ("raised", error), case, None
                if reached:
                    used = ReferenceSwitchedOff(
                        f"your {exercise.component} ran the reference ({reached[0]}), bound before the check "
                        f"switched it off: write the computation yourself"
                    )
                    return ("raised", used), case, None
                changed = _changed_argument(case.args, given, names)
                if changed:
                    return ("changed", changed), case, got
                compare = case.compare or (lambda e, g, c: difference(e, g, exercise.atol, exercise.rtol))
                found = compare(want, got, case)
                if found:
                    return ("differs", found), case, got
    finally:
        scope.update(saved)
    return None, None, None


def _speed_case(exercise: Exercise, fn: Callable) -> tuple[Timing | None, str | None]:
    """The speed case of a component that runs in training (speed.py): (timing, failure message or None)."""
    if exercise.reference is not None:  # a helper or train_step: timed inside the component that uses it
        return None, None
    name = exercise.component
    stop = f"check_{name} stopped your {name} while timing it: it is far too slow for training (see the hint)"
    with time_limit(SPEED_TIME_LIMIT, stop):
        try:
            return check_speed(
                name,
                exercise.reference_function(),
                fn,
                lambda: reference_switched_off(name, exercise.torchvision_names, fn),
            )
        except TimeLimitExceeded:
            return None, f"check_{name}: speed case failed: {stop}. {DEFAULT_FAST}."


def run(exercise: Exercise, fn: Callable, extra: bool = False) -> None:
    """Check the learner's `fn` on the exercise's cases (and the hidden ones if extra); see the module doc."""
    __tracebackhide__ = True  # IPython and pytest show only the line that raises: the message says it all
    name = exercise.component
    reference = exercise.reference_function()
    _check_signature(name, fn, reference)
    _refuse_the_reference(name, fn)
    names = list(inspect.signature(reference).parameters)
    cases = build_cases(exercise, extra)
    failing = _failing_helpers(exercise, fn)
    replaced = {helper: _BY_NAME[helper].reference_function() for helper in failing}
    failure, case, got = _first_failure(exercise, fn, cases, replaced)
    helpers_note = [
        f"your {helper} was replaced by the package's for this check: {why}. Fix it and run "
        f"check_{helper}, then this check again."
        for helper, why in failing.items()
    ]
    if failure is None:
        timing, slow = (None, None) if extra else _speed_case(exercise, fn)
        if slow:  # its paragraphs in lines nbgrader validate shows whole, the verdict first
            _PASSED.pop(name, None)
            paragraphs = [part.strip() for part in slow.split("\n")]
            lines = [_wrapped(paragraphs[0], first=len("AssertionError: "))]
            lines += [_wrapped(part, indent="  ") for part in paragraphs[1:]]
            raise AssertionError("\n".join(lines)) from None
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
    error = failure[1]
    if failure[0] == "raised" and isinstance(error, NotImplementedError) and raised_in_learner_code(error):
        raise NotImplementedError(
            _wrapped(
                f"{name} is not written yet: replace `raise NotImplementedError()` with your code, "
                f"run its cell, then this one again.",
                first=len("NotImplementedError: "),
            )
        ) from None
    message = _explain(exercise, case, names, failure, got, helpers_note)
    raise AssertionError(message) from None


FAILED_CASE = re.compile(r"check_(\w+):\s+case\s+'(.*?)'\s+failed[.:]", re.DOTALL)  # "failed." or "failed: ... raised"


def failed_case(message: str) -> tuple[str, str] | None:
    """(exercise, case) named by a check's failure message (its first lines may wrap), or None."""
    found = FAILED_CASE.search(message)
    return (found.group(1), " ".join(found.group(2).split())) if found else None


def _wrapped(text: str, indent: str = "", first: int = 0) -> str:
    """`text` in lines of at most MESSAGE_WIDTH, each indented (the first line `first` characters shorter)."""
    lines = textwrap.wrap(text, MESSAGE_WIDTH, initial_indent=" " * first + indent, subsequent_indent=indent + "  ")
    return "\n".join([lines[0][first:], *lines[1:]])


def _explain(
    exercise: Exercise, case: Case, names: list[str], failure: tuple, got: Any, notes: list[str] | tuple = ()
) -> str:
    """The failure's message: the verdict and the hint first, in short lines; then the details."""
    name = exercise.component
    kind, detail = failure
    verdict = f"check_{name}: case '{case.name}' failed."
    hint, details = exercise.hint, ["  inputs:", _inputs_text(case, names)]
    if kind == "raised":
        what = "was stopped" if isinstance(detail, TimeLimitExceeded) else f"raised {type(detail).__name__}"
        verdict = f"check_{name}: case '{case.name}' failed: your {name} {what}."
        details += [f"  your {name} {what}; your code, where it was:"]
        details += ["    " + line for line in learner_traceback(detail).splitlines()]
    elif kind == "changed":
        hint = (
            f"your {name} changed its input {detail} in place: the model still needs it. "
            f"Work on a copy (dict(target), boxes.clone()) or build new tensors."
        )
    else:
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
    with components.using(**{n: components.OWN for n in components.NAMES}):
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
