"""Fitting the capstone's training run into the course's time budget, and saying what decided it.

    fit = fit_to_budget(Recipe(), train_step=my_step, components=mine)  # yours timed against the package's
    print(fit)  # the recipe chosen, and why: this machine, its load, or a component of yours
    trace = train(recipe=fit.recipe, train_step=my_step, time_limit=fit.time_limit)

The learner's model is compared with the reference trained by the same recipe, so the recipe is chosen from a
short menu, STEP_SHARES of the recipe's scenes per epoch, for each of which the course ships the reference's
held-out figures (pretrained.reference_figures). The epochs and the schedule's shape stay; validation, which
does not change the weights, shrinks first.

The time is measured, not guessed, and whose it is too: a few real training steps (and validation scenes) of
the package's components and of the learner's alternate on the same batches (reference, learner, reference,
...), so a busy or slow machine slows both alike. The learner's run has to fit, so the learner's times choose
the recipe; their ratio to the reference's says whose the time is. Each component's own time in a step is
clocked on both sides, and a component is named only when it is more than SPEED_LIMIT times the package's
and costs a noticeable part of the step. A slow or busy machine is named as such, with its load.

Threads are measured too. On CPUs shared with other work (other learners' kernels on a JupyterHub node, with
no quota per user) torch's threads wait for one another and for the others, and a step on fewer threads can be
several times faster (benchmarks/concurrent_kernels.py). So before the timing, a few steps run at torch's
thread count and at fewer, in turns, and the fastest count is kept (choose_threads), unless OMP_NUM_THREADS
chose it.
"""

import copy
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from mrcnn_course.model.components import COMPONENTS, NAMES, using
from mrcnn_course.model.maskrcnn import MaskRCNN
from mrcnn_course.training import training_step
from mrcnn_course.training.distributed import cpus_available, threads_chosen_by_user
from mrcnn_course.training.pretrained import load_pretrained_small, rough_comparison, small_model
from mrcnn_course.training.recipe import Recipe, epoch_scenes, optimizer_for, recipe_scenes
from mrcnn_course.training.training_step import GradientLimit, step_batch
from mrcnn_course.training.validation import validation_losses, validation_metrics

# seconds: the course's budget for a notebook's training run, validation included: the default recipe's run
# (benchmarks/TUNING.md's run 20) with room to spare for a slower laptop
TRAINING_BUDGET = 360.0
STEP_SHARES = (1.0, 0.75, 0.5, 0.25)  # of the recipe's scenes per epoch: the reference's figures ship for each
SPEED_LIMIT = 3.0  # a component more than this many times the package's is named (the speed cases' limit too)
NOTICEABLE = 0.05  # of the reference's step: a component's extra time below this share is not worth naming
SAME_SPEED = 1.15  # a step ratio up to this is the same speed: alternated steps differ by this much on a busy machine
PROBE_STEPS = 3  # timed steps per model and side, after one untimed step (the first pays for memory allocation)
PROBE_IMAGES = 8  # validation scenes timed per model and side
# whole runs (the capstone's, the live demo's) took this many times what the mean of a new and a trained model's
# step predicts (1.07-1.18x in benchmarks/TUNING.md's runs; the timed steps themselves vary by as much)
WHOLE_RUN_OVER_PROBE = 1.1
# of the budget that the estimate may fill; the rest absorbs what train() does after each epoch besides validating
# (the trace, a checkpoint, the viewer's drawing) and the estimate's noise, so that the time limit cuts no epoch
BUDGET_FILLED = 0.95
REST_OF_STEP = "train_step"  # what a step spends outside the components: the layers, backward, the update
PART_NAMES = {REST_OF_STEP: "train_step (with what it runs outside the components: layers, backward, update)"}
THREAD_PROBE_STEPS = 2  # timed steps per thread count tried, after one untimed step
FEWER_THREADS_GAIN = 1.1  # fewer threads are kept only when their step is this many times faster


@dataclass(frozen=True)
class Times:
    """What one side (the package's components, or the learner's) takes: seconds per training step and per
    validated scene, and each component's own seconds per step (the components it calls count as theirs;
    REST_OF_STEP: the step's time outside every component)."""

    step: float
    validation_scene: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Machine:
    """Where the timing ran: the 1-minute load average when it began (the machine's other work), the machine's
    CPUs, the CPUs this process may use and torch's threads; `tried`: the thread counts choose_threads timed,
    with their seconds per step ({} when it timed none)."""

    load: float
    cpus: int
    available: int
    threads: int
    tried: dict[int, float] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """Other work slows torch's threads here: fewer threads were timed faster (choose_threads), or, when no
        thread counts were timed, at least one CPU's worth of load on the CPUs that torch's threads want (the
        load average is the last minute's: it counts this process's own work just before, too)."""
        if self.tried:
            return self.threads < max(self.tried)
        return self.load >= self.cpus - self.threads + 1

    @staticmethod
    def now() -> "Machine":
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return Machine(load, os.cpu_count() or 1, cpus_available(), torch.get_num_threads())


@dataclass(frozen=True)
class BudgetFit:
    """What fit_to_budget measured and decided. str() is the report a notebook prints."""

    recipe: Recipe  # the recipe to train with: the one given, or a share of its scenes per epoch
    asked: Recipe  # the recipe given
    reference: Times | None  # the package's components and train_step (None: a short run, not timed)
    learner: Times | None  # the learner's (None: only the package's were timed)
    machine: Machine
    budget: float  # seconds
    shares: tuple[float, ...] | None  # the menu of STEP_SHARES, or None: any number of whole batches

    @property
    def times(self) -> Times:
        """The times of the run that will train: the learner's, or the package's when no learner was timed
        (all 0 for a short run, which was not timed)."""
        return self.learner or self.reference or Times(0.0, 0.0)

    @property
    def seconds_per_step(self) -> float:
        return self.times.step

    @property
    def seconds_per_validation_image(self) -> float:
        return self.times.validation_scene

    @property
    def step_ratio(self) -> float:
        """The learner's step over the reference's (1.0 when no learner was timed)."""
        return self.times.step / self.reference.step if self.learner and self.reference else 1.0

    @property
    def time_limit(self) -> float:
        """train()'s backstop: well past the estimate (should the machine get much busier), never below the
        budget. A run it stops has trained fewer epochs than the reference's figures are for."""
        return max(self.budget, 1.5 * self.estimate(self.recipe))

    def estimate(self, recipe: Recipe, times: Times | None = None) -> float:
        """Seconds that `recipe` takes by `times` (default: those of the run that will train)."""
        times = times or self.times
        epoch = recipe.steps_per_epoch * times.step + recipe.val_images * times.validation_scene
        return WHOLE_RUN_OVER_PROBE * recipe.epochs * epoch

    def fits(self, recipe: Recipe, times: Times | None = None) -> bool:
        """Whether `recipe`, by `times` (default: those of the run that will train), fits the budget with the
        margin that train()'s work between epochs needs (BUDGET_FILLED)."""
        return self.estimate(recipe, times) <= BUDGET_FILLED * self.budget

    def slow_parts(self) -> list[tuple[str, float, float]]:
        """(name, the learner's seconds per step, the package's) of each part of the learner's step that is more
        than SPEED_LIMIT times the package's and costs more than NOTICEABLE of a step, the costliest first."""
        if self.learner is None or self.reference is None:
            return []
        slow = [
            (name, mine, self.reference.parts.get(name, 0.0))
            for name, mine in self.learner.parts.items()
            if mine > SPEED_LIMIT * self.reference.parts.get(name, 0.0)
            and mine - self.reference.parts.get(name, 0.0) > NOTICEABLE * self.reference.step
        ]
        return sorted(slow, key=lambda part: part[1] - part[2], reverse=True)

    def __str__(self) -> str:
        if self.reference is None:
            return (
                f"A short run ({self.asked.total_steps} steps) is trained as it is, untimed: timing it would take "
                f"longer than training it."
            )
        lines = [self._measured(self.reference), self._decided(), *self._why(self.reference), self._comparison()]
        return "\n".join(line for line in lines if line)

    def _measured(self, reference: Times) -> str:
        """What was timed: the step and a validated scene, yours beside the package's; how torch's threads were
        chosen, when other counts were timed."""
        if self.learner is None:
            said = (
                f"Timed on this machine: a training step of the package's model takes {reference.step:.2f} s and "
                f"validating a scene {reference.validation_scene:.2f} s."
            )
        else:
            speed = "the same speed" if self.step_ratio <= SAME_SPEED else f"{self.step_ratio:.2f}x the package's"
            said = (
                f"Timed on this machine, taking turns on the same batches: a training step takes "
                f"{self.learner.step:.2f} s with your components and train_step and {reference.step:.2f} s with "
                f"the package's ({speed}); validating a scene {self.learner.validation_scene:.2f} s and "
                f"{reference.validation_scene:.2f} s."
            )
        return "\n".join(line for line in (said, _thread_choice(self.machine)) if line)

    def _decided(self) -> str:
        asked, fitted = self.asked, self.recipe
        whole = f"{asked.epochs} epochs of {asked.images_per_epoch} scenes ({asked.total_steps} steps)"
        budget = f"the budget of {self.budget / 60:g} min"
        if fitted == asked:
            return f"The recipe, {whole}, takes about {self.estimate(asked) / 60:.1f} min: within {budget}."
        if self.fits(asked):  # a menu without the whole recipe (shares=(0.25,), say)
            said = f"The recipe, {whole}, fits {budget}, but the menu holds only {self.shares} of it"
        else:
            said = f"The recipe, {whole}, would take about {self.estimate(asked) / 60:.1f} min, over {budget}"
        over = not self.fits(fitted)
        return (
            f"{said}: this run trains {fitted.epochs} epochs of {fitted.images_per_epoch} scenes "
            f"({fitted.total_steps} steps, {fitted.images_per_epoch / asked.images_per_epoch:.0%} of the recipe) and "
            f"validates on {fitted.val_images} scenes, about {self.estimate(fitted) / 60:.1f} min"
            + (" (still over the budget: no smaller recipe has the reference's figures)." if over else ".")
        )

    def _why(self, reference: Times) -> list[str]:
        """Why the recipe shrank (nothing when it did not): the learner's components, the machine, or both."""
        if self.recipe == self.asked:
            return []
        reasons = []
        slow = self.slow_parts()
        if slow:
            named = "; ".join(
                f"your {PART_NAMES.get(name, name)} takes {mine:.3f} s of each step against the package's "
                f"{theirs:.3f} s "
                f"({mine / max(theirs, 1e-9):.0f}x, over the speed limit of {SPEED_LIMIT:g}x)"
                for name, mine, theirs in slow
            )
            reasons.append(
                f"Your components cost steps: {named}. Make it faster (its lesson's speed case says how) to get "
                f"the steps back."
            )
        elif self.step_ratio > SAME_SPEED:
            reasons.append(
                f"Your step is {self.step_ratio:.2f}x the reference's, with no component over the speed limit "
                f"({SPEED_LIMIT:g}x): small costs, spread over your components."
            )
        full_here = self.estimate(self.asked, reference)
        whole_minutes = math.ceil(self.estimate(self.asked) / BUDGET_FILLED / 60)
        if not self.fits(self.asked, reference):  # even the package's components would not fit: the machine decides
            machine = self.machine
            if machine.busy:
                reasons.append(
                    f"This machine is busy: other programs want its {machine.cpus} CPUs too (a load average of "
                    f"{machine.load:.1f} over the last minute), so each step waits its turn. That is the machine, "
                    f"not your code: run it when the machine is quieter, or give it more time."
                )
            else:
                reasons.append(
                    f"This machine runs the reference's step in {reference.step:.2f} s: even the package's "
                    f"components would need about {full_here / 60:.1f} min for the whole recipe here."
                )
            reasons.append(
                f"For the whole recipe, give it the time: fit_to_budget(recipe, seconds={whole_minutes * 60}, ...) "
                f"trains all of it, in about {self.estimate(self.asked) / 60:.0f} min here."
            )
        return reasons

    def _comparison(self) -> str:
        """A warning when the run is too short for a close comparison with the reference trained alike."""
        return "" if self.shares is None else rough_comparison(self.recipe.total_steps)


def _threads(count: int) -> str:
    return f"{count} thread" + ("s" if count != 1 else "")


def _thread_choice(machine: Machine) -> str:
    """How torch's thread count was chosen, when choose_threads timed several ("" otherwise)."""
    if len(machine.tried) < 2 or machine.threads not in machine.tried:
        return ""
    timed = ", ".join(
        f"{_threads(threads)} took {seconds:.2f} s a step" for threads, seconds in sorted(machine.tried.items())
    )
    said = f"torch splits each step over threads, and here {timed}: it uses {machine.threads}"
    if machine.busy:
        return f"{said} (other programs share the {machine.cpus} CPUs, and more threads wait for them)."
    return f"{said}."


def choose_threads(run_step: Callable[[], object], steps: int = THREAD_PROBE_STEPS) -> dict[int, float]:
    """Set torch's thread count to the fastest for `run_step` (one training step) here, and return the seconds
    per step of each count tried ({} when none was: one thread already, or OMP_NUM_THREADS set by the user).

    From torch's count down by halves to one thread, the counts take turns, `steps` timed steps each after an
    untimed one, and a count is kept only when its median step is FEWER_THREADS_GAIN times faster than the
    more threads' best; the descent stops at the first count that is not."""
    start = torch.get_num_threads()
    if start <= 1 or threads_chosen_by_user():
        return {}
    counts = [start]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    seconds: dict[int, list[float]] = {count: [] for count in counts}
    try:
        for turn in range(steps + 1):
            for count in counts:
                torch.set_num_threads(count)
                started = time.perf_counter()
                run_step()
                if turn:  # the first turn pays for memory and each thread pool's start
                    seconds[count].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(start)
    medians = {count: sorted(times)[len(times) // 2] for count, times in seconds.items()}
    best = start
    for count in counts[1:]:
        if medians[count] * FEWER_THREADS_GAIN > medians[best]:
            break
        best = count
    torch.set_num_threads(best)
    return medians


def fit_to_budget(
    recipe: Recipe | None = None,
    seconds: float = TRAINING_BUDGET,
    train_step: Callable | None = None,
    components: dict[str, Callable] | None = None,
    shares: tuple[float, ...] | None = STEP_SHARES,
) -> BudgetFit:
    """Time the package's components and train_step against `components` ({name: function}; the package's for
    the rest) with `train_step` (default training_step.train_step), alternately, on the recipe's own scenes,
    and return a BudgetFit whose recipe ends within `seconds` by the learner's times, if any recipe of the menu
    does: the largest of `shares` of the recipe's scenes per epoch that fits (validation scenes cut first, to
    no fewer than the shown scenes and a batch), else the smallest. shares=None: any number of whole batches.
    With neither `train_step` nor `components` only the package's are timed. A recipe of fewer steps than the
    timing itself would take (autograding's short run) is kept, untimed.

    Torch's thread count is set first, to the fastest here (choose_threads; the report says what it timed).
    A run goes from a new model to a trained one, and the trained one is slower (more proposals are positives
    for the mask head, more detections to evaluate): both are timed, a new small model and the shipped trained
    one, and the run is costed at their mean. The global random state is left as it was.
    """
    asked = recipe or Recipe()
    sides = [_Side(training_step.train_step, {})]
    if train_step is not None or components is not None:
        sides.append(_Side(train_step or training_step.train_step, dict(components or {})))
    machine = Machine.now()  # before the timing adds its own load
    if asked.total_steps < 2 * len(sides) * (PROBE_STEPS + 1):  # fewer than the timing itself takes
        return BudgetFit(asked, asked, None, None, machine, seconds, shares)
    with torch.random.fork_rng(devices=[]):
        tried = choose_threads(_first_step(asked))
    machine = replace(machine, threads=torch.get_num_threads(), tried=tried)
    with torch.random.fork_rng(devices=[]):
        for model in (small_model(), load_pretrained_small()):
            _time_alternately(model, asked, sides)
    reference, *learner = (side.times() for side in sides)
    fit = BudgetFit(asked, asked, reference, learner[0] if learner else None, machine, seconds, shares)
    return replace(fit, recipe=_largest_that_fits(fit))


def _first_step(recipe: Recipe) -> Callable[[], None]:
    """One training step of a new small model (the package's components) on the recipe's first batch, again
    and again: what choose_threads times."""
    model = small_model().train()
    optimizer = GradientLimit(optimizer_for(model, recipe), model.parameters(), recipe.grad_clip)
    dataset, order = epoch_scenes(replace(recipe, images_per_epoch=recipe.batch_size), 1)
    batch = step_batch(dataset, order, recipe.batch_size, 1)

    def run_step() -> None:
        torch.manual_seed(recipe.seed)
        training_step.train_step(model, optimizer, *batch)

    return run_step


def _largest_that_fits(fit: BudgetFit) -> Recipe:
    """The recipe to train: the largest of the menu (or of whole batches) that fits, with as many of the asked
    validation scenes as fit, else the smallest (the asked recipe itself when the menu holds 1.0 and it fits)."""
    asked, times = fit.asked, fit.times
    if fit.shares is None:
        candidates = [
            replace(asked, images_per_epoch=n * asked.batch_size) for n in range(asked.steps_per_epoch, 0, -1)
        ]
    else:
        candidates = [recipe_share(asked, share) for share in sorted(fit.shares, reverse=True)]
    least = min(asked.val_images, max(asked.shown_images, asked.batch_size))
    epoch = BUDGET_FILLED * fit.budget / (WHOLE_RUN_OVER_PROBE * asked.epochs)  # seconds, by the timed steps
    for candidate in candidates:
        left = epoch - candidate.steps_per_epoch * times.step  # for validation
        val_images = min(asked.val_images, math.floor(left / max(times.validation_scene, 1e-9)))
        if val_images >= least:
            return replace(candidate, val_images=val_images)
    return replace(candidates[-1], val_images=least)


def recipe_share(recipe: Recipe, share: float) -> Recipe:
    """`recipe` with `share` of its steps per epoch (whole batches, at least one): a recipe of the menu."""
    steps = max(1, round(share * recipe.steps_per_epoch))
    return replace(recipe, images_per_epoch=steps * recipe.batch_size)


class _Side:
    """One side of the alternated timing: a train_step and the components it runs ({name: function}; the
    package's for the rest), each wrapped in a clock of its own time; the seconds measured so far."""

    def __init__(self, train_step: Callable, functions: dict[str, Callable]):
        self.train_step = train_step
        self.own_seconds: dict[str, float] = dict.fromkeys(NAMES, 0.0)
        self._open: list[float] = []  # per open call: the seconds of the components it called (not its own)
        self.clocked = {name: self._clock(name, functions.get(name) or COMPONENTS[name].own) for name in NAMES}
        self.steps: list[float] = []
        self.scenes: list[float] = []  # seconds per validated scene, one per model
        self.step_parts: dict[str, float] = dict.fromkeys(NAMES, 0.0)

    def _clock(self, name: str, function: Callable) -> Callable:
        @functools.wraps(function)  # keeps the signature that components.use checks
        def clocked(*args, **kwargs):
            started = time.perf_counter()
            self._open.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                inner, spent = self._open.pop(), time.perf_counter() - started
                self.own_seconds[name] += spent - inner
                if self._open:
                    self._open[-1] += spent

        return clocked

    def step(self, model: MaskRCNN, optimizer, batch, timed: bool) -> None:
        before = dict(self.own_seconds)
        with using(**self.clocked):
            started = time.perf_counter()
            self.train_step(model, optimizer, *batch)
            seconds = time.perf_counter() - started
        if timed:
            self.steps.append(seconds)
            for name, total in self.own_seconds.items():
                self.step_parts[name] += total - before[name]

    def validate(self, model: MaskRCNN, recipe: Recipe, scenes) -> None:
        with using(**self.clocked):
            started = time.perf_counter()
            validation_losses(model, scenes, recipe.batch_size, recipe.seed)
            validation_metrics(model, scenes, recipe)
            self.scenes.append((time.perf_counter() - started) / len(scenes))

    def times(self) -> Times:
        steps = len(self.steps)
        step = sum(self.steps) / steps
        parts = {name: seconds / steps for name, seconds in self.step_parts.items() if seconds}
        parts[REST_OF_STEP] = max(0.0, step - sum(parts.values()))
        return Times(step, sum(self.scenes) / len(self.scenes), parts)


def _time_alternately(model: MaskRCNN, recipe: Recipe, sides: list[_Side]) -> None:
    """Train a copy of `model` per side through the recipe's first batches, the sides taking turns on each
    batch (the same scenes, the same random draws), timing every step after the first; then each side
    validates PROBE_IMAGES scenes. Drawing the scenes is not timed (a tenth of a step, the same for both)."""
    copies = [copy.deepcopy(model).train() for _ in sides]
    optimizers = [GradientLimit(optimizer_for(m, recipe), m.parameters(), recipe.grad_clip) for m in copies]
    dataset, order = epoch_scenes(replace(recipe, images_per_epoch=(PROBE_STEPS + 1) * recipe.batch_size), 1)
    for k in range(1, PROBE_STEPS + 2):
        for side, trained, optimizer in zip(sides, copies, optimizers):
            torch.manual_seed(recipe.seed + k)  # both sides sample the same anchors and RoIs
            side.step(trained, optimizer, step_batch(dataset, order, recipe.batch_size, k), timed=k > 1)
    scenes = recipe_scenes(recipe, 0, min(PROBE_IMAGES, recipe.val_images))
    for side, trained in zip(sides, copies):
        side.validate(trained, recipe, scenes)
