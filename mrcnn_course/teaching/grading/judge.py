"""The judge: how a learner's function is run on an exercise's cases and compared with the reference.

Written once, used by both drivers: the check in the learner's kernel (core.run) and the re-check at
autograding, outside it (sealed.py, where the learner's function runs in a fresh process and the
comparison happens in the autograder's own).

    cases = build_cases(exercise, extra)               # the same on every call
    expected = expected_outputs(exercise, cases)       # the reference, with the package's own components
    outcomes = run_cases(exercise, fn, cases)          # the learner's fn under the guard: one Outcome per case,
                                                       # up to the first that does not return normally
    failure = first_failure(exercise, cases, expected, outcomes)   # None: every case passed

An Outcome says what the function did on one case: returned (OK), raised (RAISED, the time limit
included), ran the reference however it reached it (RAN_THE_REFERENCE), or changed an input in place
(CHANGED_AN_INPUT). A returned output is compared by `compare`, which gives the first Difference.
"""

import copy
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.teaching.grading.exercise import Case, Exercise
from mrcnn_course.teaching.grading.guard import reference_code, reference_noticed, reference_switched_off, time_limit

# What the learner's function did on a case (Outcome.kind).
OK = "ok"
RAISED = "raised"
RAN_THE_REFERENCE = "ran the reference"
CHANGED_AN_INPUT = "changed an input"


@dataclass
class Outcome:
    """What the learner's function did on one case."""

    kind: str  # OK, RAISED, RAN_THE_REFERENCE or CHANGED_AN_INPUT
    output: Any = None  # what it returned (OK, CHANGED_AN_INPUT)
    detail: str = ""  # RAISED: "TypeError: ..."; RAN_THE_REFERENCE: the reference's name; CHANGED_AN_INPUT: the input
    error: BaseException | None = None  # RAISED: the exception itself, in the process that ran the function


@dataclass
class Difference:
    """Where the learner's output first differs from the expected one, and how."""

    where: str  # "output[1]['boxes']"
    expected: str
    got: str
    detail: str


@dataclass
class Failure:
    """The first case that fails: what the function did on it and, if it returned, how its output differs."""

    case: Case
    outcome: Outcome
    difference: Difference | None = None


@contextmanager
def own_components() -> Iterator[None]:
    """Within the block every component runs the package's own implementation (the reference's world)."""
    with components.using(**dict.fromkeys(components.NAMES, components.OWN)):
        yield


def learner_function(given: Any) -> Any:
    """The function a check runs for what the learner passed: a function as it is; for a module exercise, a
    class (`class MyHead(mask_head.MaskRCNNHeads): def forward(self, features): ...`) or an instance of it,
    its forward, which the model calls like the component, forward(head, features)."""
    if isinstance(given, type) and issubclass(given, nn.Module):
        return given.forward
    if isinstance(given, nn.Module):
        return type(given).forward
    return given


def build_cases(exercise: Exercise, extra: bool = False) -> list[Case]:
    """The exercise's cases (with the hidden ones if extra), the same on every call."""
    with torch.random.fork_rng(devices=[]):  # the cases' random draws leave the learner's generator alone
        torch.manual_seed(0)
        return [c for c in exercise.cases() if extra or not c.extra]


def expected_outputs(exercise: Exercise, cases: list[Case]) -> list:
    """The reference's output on each case, computed before any learner code runs."""
    reference = exercise.reference_function()
    with own_components():
        return [exercise.result(reference, copy.deepcopy(c.args)) for c in cases]


def switched_off(exercise: Exercise, fn: Callable) -> AbstractContextManager:
    """The guard around fn: the reference out of reach, the other components the package's own (guard.py)."""
    return reference_switched_off(exercise.component, exercise.torchvision_names, fn)


def run_cases(exercise: Exercise, fn: Callable, cases: list[Case], forbidden: set | None = None) -> list[Outcome]:
    """Run fn on a copy of each case's inputs, under the guard and one time limit for all cases; stop after
    the first case on which it does not return normally (its Outcome is the last). `forbidden`: the code
    objects of the reference (guard.reference_code), if taken before any learner code ran (warm_runner.py)."""
    name = exercise.component
    reference = exercise.reference_function()
    names = list(inspect.signature(reference).parameters)
    stop = (
        f"check_{name} stopped your {name} after {exercise.time_limit:g} s: does a loop never end, or loop in "
        f"Python over every element? (the cases are small)"
    )
    code = forbidden or reference_code(name, exercise.torchvision_names, reference)
    outcomes = []
    with (
        switched_off(exercise, fn),
        time_limit(exercise.time_limit, stop),
        reference_noticed(code) as reached,  # also a reference captured before the check, any route
    ):
        for case in cases:
            given = copy.deepcopy(case.args)
            try:
                got = exercise.result(fn, given)
            except Exception as error:  # the learner's bug (or the time limit): that case fails
                outcomes.append(Outcome(RAISED, detail=f"{type(error).__name__}: {str(error)[:300]}", error=error))
                break
            if reached:
                outcomes.append(Outcome(RAN_THE_REFERENCE, detail=reached[0]))
                break
            changed = changed_argument(case.args, given, names)
            if changed:
                outcomes.append(Outcome(CHANGED_AN_INPUT, got, detail=changed))
                break
            outcomes.append(Outcome(OK, got))
    return outcomes


def first_failure(exercise: Exercise, cases: list[Case], expected: list, outcomes: list[Outcome]) -> Failure | None:
    """The first case whose outcome is not OK or whose output differs from the expected one; None if none."""
    for case, want, outcome in zip(cases, expected, outcomes):
        if outcome.kind != OK:
            return Failure(case, outcome)
        found = compare(exercise, case, want, outcome.output)
        if found:
            return Failure(case, outcome, found)
    return None


def compare(exercise: Exercise, case: Case, expected: Any, got: Any) -> Difference | None:
    """The first difference of `got` from `expected` on this case (its own comparison, if it has one)."""
    try:
        if case.compare:
            return case.compare(expected, got, case)
        return difference(expected, got, exercise.atol, exercise.rtol)
    except Exception as error:  # an output of a kind the comparison did not foresee
        return Difference(
            "output", short(expected), short(got), f"the output could not be compared ({type(error).__name__}: {error})"
        )


def changed_argument(originals: tuple, given: tuple, names: list[str]) -> str | None:
    """The name of the first input that the learner's function changed in place, or None."""
    for name, before, after in zip(names, originals, given):
        if isinstance(before, (Tensor, dict, list, tuple)):
            found = difference(before, after, 0.0, 0.0, name)
            if found:
                return found.where
    return None


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
