"""What an exercise is, and the one registry of them.

An exercise is a function the learner writes (a component of mrcnn_course.model.components, or a helper
such as interpolation_weights, or the capstone's train_step). It is declared once, in the exercises_<stage>.py
of its stage, by the `exercise` decorator (core.py) on its check function:

    @exercise(cases=_nms_cases, hint="sort by score, ...", mistakes=(Mistake(...), ...),
              steps=("Sort: ...", ...), fast="no Python step per box: ...", torchvision_names=(...))
    def check_nms(nms: Callable, extra: bool = False) -> None:
        '''Check your nms(boxes, scores, iou_threshold) -> Tensor[K] int64 against the reference.'''

The decorator builds the Exercise below, adds it to EXERCISES (or HELPER_EXERCISES, for an exercise that
names its own reference) and makes check_nms run it. Everything else reads the registry: grading.hint (the
steps), the speed case (the advice), the re-check at autograding (sealed.py), the tests.

Correctness first, speed second: a component that must be fast in training may be written twice, in its
natural form (nms: the greedy loop) and then fast (nms_fast, declared with implements="nms"). Both are
checked on the same cases; only the last version of a component has the speed case, and a fast version's
steps are its speed advice (Exercise.speed_advice). versions("nms") lists them; the capstone runs the last
one the learner passed (learner.load_components).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mrcnn_course.model import components

if TYPE_CHECKING:  # judge.py imports this module: only the type is needed here
    from mrcnn_course.teaching.grading.judge import Difference

# The advice of a speed case whose exercise gives none: where the time of a slow function usually goes.
DEFAULT_FAST = "work on whole tensors (broadcasting, indexing, torch functions): no Python loop over boxes or pixels"


@dataclass
class Case:
    """One input to the learner's function, with the name a learner reads when it fails."""

    name: str
    args: tuple
    notes: dict[str, str] = field(default_factory=dict)  # argument -> how to show it (e.g. a module)
    extra: bool = False  # hidden: run only with extra=True (the autograder's hidden tests)
    compare: Callable[[Any, Any, "Case"], "Difference | None"] | None = None  # instead of judge.difference


@dataclass
class Mistake:
    """A usual mistake: `answer` computes what it gives (with the reference), `hint` explains it."""

    hint: str
    answer: Callable


@dataclass
class Exercise:
    """One function to write: its cases, the catalogue of usual mistakes, the hint and its steps, the
    advice when it is too slow, the tolerance, and torchvision's versions to switch off while it is checked."""

    component: str  # the function's name (a component's, for a component)
    cases: Callable[[], list[Case]]  # built on each call, deterministically (judge.build_cases seeds torch)
    hint: str  # shown when no Mistake matches: the usual pitfalls of this exercise
    steps: tuple[str, ...]  # grading.hint(name): what to compute and which torch functions help, not the code
    mistakes: tuple[Mistake, ...] = ()
    fast: str = DEFAULT_FAST  # how to make it fast, shown when its speed case fails (speed.py)
    atol: float = 0.0  # floats are close when |got - expected| <= atol + rtol * |expected|;
    rtol: float = 0.0  # integers and booleans are always compared exactly
    torchvision_names: tuple[str, ...] = ()  # e.g. ("torchvision.ops.nms",): out of reach during the check
    time_limit: float = 30.0  # seconds for all cases together
    # An exercise that is not a component (a helper such as interpolation_weights, or train_step) names its
    # reference here; `outcome(fn, args)` is what a case compares (default: fn(*args); train_step's is its
    # losses and the weights after its step). Mistakes' answers go through the same outcome.
    reference: Callable | None = None
    outcome: Callable[[Callable, tuple], Any] | None = None
    # A component's second version (see the module docstring) names the component it writes again; `form` says
    # how each version computes, for the capstone's report ("the greedy loop").
    implements: str = ""
    form: str = ""

    def __post_init__(self) -> None:
        if self.implements:  # checked under its own name: the component's every version is out of reach too
            own = components.COMPONENTS[self.implements]
            self.torchvision_names = (
                f"mrcnn_course.model.{own.module}.{own.name}",
                f"mrcnn_course.model.components.{own.name}",
                f"mrcnn_course.model.torchvision_ops.{own.name}",
                *self.torchvision_names,
            )
            if self.fast != DEFAULT_FAST:
                raise ValueError(f"{self.component}: a fast version's speed advice is its steps; declare no `fast`")

    @property
    def writes(self) -> str:
        """The component (or helper) this exercise writes: `implements`, or its own name."""
        return self.implements or self.component

    def reference_function(self) -> Callable:
        return self.reference or components.COMPONENTS[self.writes].own

    def speed_advice(self) -> str:
        """What a failed speed case advises: `fast`; for a fast version, its first step and where the rest are."""
        if self.implements:
            return f"{self.steps[0].rstrip('.')} (grading.hint({self.component!r}) gives the next ideas one at a time)"
        return self.fast

    def result(self, fn: Callable, args: tuple) -> Any:
        return self.outcome(fn, args) if self.outcome else fn(*args)

    def tolerance_text(self) -> str:
        if self.atol == self.rtol == 0:
            return "compared exactly"
        return f"floats within {self.atol:g} + {self.rtol:g} x |expected|, integers exactly"


# The registry, in the order the exercises are declared (grading/__init__.py imports the stages in lesson
# order). EXERCISES: the components' (nms and nms_fast both write nms); HELPER_EXERCISES: the exercises that
# name their own reference.
EXERCISES: dict[str, Exercise] = {}
HELPER_EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add `exercise` to the registry (core.exercise does, for each declaration); a name is declared once."""
    if exercise.component in EXERCISES or exercise.component in HELPER_EXERCISES:
        raise ValueError(f"the exercise {exercise.component!r} is declared twice")
    (EXERCISES if exercise.reference is None else HELPER_EXERCISES)[exercise.component] = exercise
    return exercise


def versions(component: str) -> list[Exercise]:
    """The exercises that write `component`, as declared: the natural form first, then the fast one ([nms,
    nms_fast]); one for a component written once; none for one that no lesson asks for."""
    return [e for e in EXERCISES.values() if e.writes == component]


def every_exercise() -> dict[str, Exercise]:
    """Every exercise by name, the components' and the helpers'."""
    return {**EXERCISES, **HELPER_EXERCISES}
