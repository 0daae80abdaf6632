"""Speed cases: is the learner's function fast enough to train on? The capstone trains on it.

The capstone (lesson 07) trains the model on the learner's components within a fixed time budget: a
function 10x slower than the package's costs scenes the model never learns from. So each component that
runs in every training step (or in every validation scene) has one speed case, on the very inputs a
training step of the capstone's model gives it, and a check fails when the learner's function is more
than MAX_RATIO times slower than the package's. A component written twice (nms, then nms_fast) has it in
its fast version only: the natural form is checked for correctness alone.

    ratio = measure(reference, fn, args, switched_off)   # the learner's time / the package's time

Robust on a busy machine (a shared 2-core laptop, an autograder running several kernels):
  - CPU time of this thread (time.thread_time), with torch limited to 1 thread while timing: time spent
    waiting for the CPU is not counted, and both functions get the same single core;
  - the two functions alternate, round by round (ROUNDS rounds of enough calls to take MIN_ROUND seconds);
    each round gives a ratio, and the median ratio is the verdict;
  - a verdict over MAX_RATIO is measured once more, and the lower of the two counts.
  - at autograding the package's time is measured once per grading run (package_seconds, sealed.py) and each
    learner's function is timed alone against it (measure_against); only a ratio over MAX_RATIO is then
    measured alternately, as above.
What it leaves out: GPUs; a function fast on 1 thread and slow on many (no learner function is).
"""

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from mrcnn_course.model import components
from mrcnn_course.teaching.grading.judge import own_components
from mrcnn_course.training.budget import SPEED_LIMIT

MAX_RATIO = SPEED_LIMIT  # slower than this fails: the capstone's budget names such a component as costing steps
ROUNDS = 5  # alternating rounds per measurement; the median ratio counts
MIN_ROUND = 0.01  # seconds of CPU per function per round, at least (a fast function runs several times)
GIVE_UP = 2.0  # seconds: one call slower than this and MAX_RATIO x the package's needs no repeats


@dataclass(frozen=True)
class StepInputs:
    """What a component received in one training step of the capstone's model (its largest call)."""

    args: tuple
    calls_per_step: int  # calls in one training step (8 scenes)
    calls_per_scene: int  # calls in validating one scene (evaluation)
    shapes: str  # "Tensor[852, 4], Tensor[852], 0.7"


def _largest(calls: list[tuple]) -> tuple:
    return max(calls, key=lambda args: sum(a.numel() for a in _tensors(args)))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _describe(args: tuple) -> str:
    def one(a: Any) -> str:
        if isinstance(a, torch.Tensor):
            return f"Tensor[{', '.join(map(str, a.shape))}]"
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            return f"{len(a)} x {one(a[0])}"
        if isinstance(a, dict):
            return "{" + ", ".join(f"{k}: {one(v)}" for k, v in a.items()) + "}"
        if isinstance(a, torch.nn.Module):
            return type(a).__name__
        return repr(a)

    return ", ".join(one(a) for a in args)


_STEP: dict[str, StepInputs] = {}


def step_inputs() -> dict[str, StepInputs]:
    """Each component's inputs in one training step (8 scenes of the capstone's recipe) and in validating one
    scene, recorded from the course's trained small model running the package's own components. Built once
    per session (a few seconds), deterministically."""
    if _STEP:
        return _STEP
    from mrcnn_course.training.pretrained import load_pretrained_small
    from mrcnn_course.training.recipe import Recipe, recipe_scenes

    recipe = Recipe()
    calls: dict[str, list[tuple]] = {name: [] for name in components.NAMES}
    counts = {"step": dict.fromkeys(components.NAMES, 0), "scene": dict.fromkeys(components.NAMES, 0)}
    phase = ["step"]

    def recorder(name: str) -> Callable:
        own = components.COMPONENTS[name].own

        def record(*args):
            counts[phase[0]][name] += 1
            calls[name].append(tuple(copy.deepcopy(a) if not isinstance(a, torch.nn.Module) else a for a in args))
            return own(*args)

        return record

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        model = load_pretrained_small()
        scenes = recipe_scenes(recipe, 0, recipe.batch_size)
        images, targets = zip(*(scenes[i] for i in range(recipe.batch_size)))
        with components.using(**{name: recorder(name) for name in components.NAMES}):
            model.train()
            model(list(images), list(targets))
            phase[0] = "scene"
            model.eval()
            model([images[0]])
    for name, recorded in calls.items():
        if recorded:
            args = _largest(recorded)
            _STEP[name] = StepInputs(args, counts["step"][name], counts["scene"][name], _describe(args))
    return _STEP


def _cpu_seconds(fn: Callable, args: tuple, times: int) -> float:
    """CPU seconds of this thread per call of fn(*args), over `times` calls (fresh copies of the inputs)."""
    copies = [copy.deepcopy(args) for _ in range(times)]  # outside the timing: a function may change its inputs
    start = time.thread_time()
    for given in copies:
        fn(*given)
    return (time.thread_time() - start) / times


@dataclass(frozen=True)
class Timing:
    ratio: float  # learner's / package's, the median over the rounds
    learner: float  # seconds per call (median over the rounds)
    package: float


def measure(
    reference: Callable, fn: Callable, args: tuple, switched_off: Callable[[], AbstractContextManager]
) -> Timing:
    """Time fn against reference on args, alternating (see the module docstring); fn runs inside switched_off()."""
    with one_thread():
        with own_components():
            package = _cpu_seconds(reference, args, 1)  # warm-up, and how many calls make a round
            package = _cpu_seconds(reference, args, 1)
        with switched_off():
            learner = _cpu_seconds(fn, args, 1)
        if learner > GIVE_UP and learner > MAX_RATIO * package:
            return Timing(learner / package, learner, package)
        times = _calls_per_round(package)
        ratios, learner_times, package_times = [], [], []
        for _ in range(ROUNDS):
            with own_components():
                package = _cpu_seconds(reference, args, times)
            with switched_off():
                learner = _cpu_seconds(fn, args, times)
            ratios.append(learner / max(package, 1e-9))
            learner_times.append(learner)
            package_times.append(package)
        return Timing(statistics.median(ratios), statistics.median(learner_times), statistics.median(package_times))


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread within the block (both sides of a timing get the same single core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _calls_per_round(seconds_per_call: float) -> int:
    """Calls of a function this fast that make a round of at least MIN_ROUND seconds (at most 50)."""
    return max(1, min(50, round(MIN_ROUND / max(seconds_per_call, 1e-6))))


def package_seconds(reference: Callable, args: tuple) -> float:
    """The package's CPU seconds per call of reference(*args) on one thread: the median of ROUNDS rounds after a
    warm-up call. The re-check at autograding measures it once per grading run (sealed.py), then times each
    learner's function alone against it (check_speed's `package`)."""
    with one_thread(), own_components():
        times = _calls_per_round(_cpu_seconds(reference, args, 1))
        return statistics.median(_cpu_seconds(reference, args, times) for _ in range(ROUNDS))


def measure_against(
    package: float, fn: Callable, args: tuple, switched_off: Callable[[], AbstractContextManager]
) -> Timing:
    """Time fn alone (inside switched_off()) against the package's `package` seconds per call (package_seconds):
    one thread, the median of ROUNDS rounds after a warm-up call."""
    with one_thread(), switched_off():
        learner = _cpu_seconds(fn, args, 1)
        if learner <= GIVE_UP or learner <= MAX_RATIO * package:
            times = _calls_per_round(package)
            learner = statistics.median(_cpu_seconds(fn, args, times) for _ in range(ROUNDS))
    return Timing(learner / max(package, 1e-9), learner, package)


def capstone_calls(inputs: StepInputs) -> int:
    """How many times the capstone's default recipe calls the component: its training steps and validations."""
    from mrcnn_course.training.recipe import Recipe

    recipe = Recipe()
    steps = recipe.epochs * recipe.images_per_epoch // recipe.batch_size
    return steps * inputs.calls_per_step + recipe.epochs * recipe.val_images * inputs.calls_per_scene


def explain(name: str, timing: Timing, inputs: StepInputs, advice: str) -> str:
    """The failure message: how much slower, what it costs the capstone, how to make it fast (`advice`)."""
    calls = capstone_calls(inputs)
    minutes = calls * max(timing.learner - timing.package, 0.0) / 60
    where = []
    if inputs.calls_per_step:
        where.append(f"{inputs.calls_per_step} times per training step")
    if inputs.calls_per_scene:
        where.append(f"{inputs.calls_per_scene} times per validation scene")
    return (
        f"check_{name}: speed case failed: your {name} is {timing.ratio:.1f}x slower than the package's (the limit "
        f"is {MAX_RATIO:g}x) on the inputs a training step of the capstone gives it ({inputs.shapes}): "
        f"{timing.learner * 1000:.1f} ms against {timing.package * 1000:.1f} ms (CPU time on one thread, median "
        f"of {ROUNDS} alternating rounds, measured twice).\n"
        f"  The capstone calls it {' and '.join(where)}, {calls:,} times in all: about {minutes:.1f} more minutes "
        f"than the package's, which fit_to_budget takes from the scenes your model learns from.\n"
        f"  To make it fast: {advice}."
    )


def check_speed(
    name: str,
    component: str,
    reference: Callable,
    fn: Callable,
    switched_off: Callable[[], AbstractContextManager],
    advice: str,
    package: float | None = None,
) -> tuple[Timing | None, str | None]:
    """Time exercise `name` on the inputs a training step gives `component` (nms_fast on nms's): (the timing,
    None) if fn is fast enough, (the timing, the failure message, ending with `advice`) if not; (None, None)
    for a component that no training step calls. `package`: the package's seconds per call, measured before
    (package_seconds): fn alone is timed against it, and only a ratio over MAX_RATIO is measured alternately."""
    inputs = step_inputs().get(component)
    if inputs is None:
        return None, None
    if package is not None:
        alone = measure_against(package, fn, inputs.args, switched_off)
        if alone.ratio <= MAX_RATIO:
            return alone, None
    timing = measure(reference, fn, inputs.args, switched_off)
    if timing.ratio > MAX_RATIO:  # a busy moment can look like a slow function: measure again
        timing = min(timing, measure(reference, fn, inputs.args, switched_off), key=lambda t: t.ratio)
    return timing, explain(name, timing, inputs, advice) if timing.ratio > MAX_RATIO else None
