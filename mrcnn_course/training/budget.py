"""Fitting a training run into the course's time budget, whatever the components and the machine.

    fit = fit_to_budget(Recipe(), train_step=my_train_step)   # with the components that will train
    print(fit); trace = train(recipe=fit.recipe, train_step=my_train_step)

The default recipe fits the budget on 2 CPU cores with the package's components (benchmarks/TUNING.md's
run 20 times it). A learner's components can be slower (an IoU or a RoI Align that runs for every image
of every step), and so can a laptop: fit_to_budget times a few real training steps and validation scenes
with whatever is active, and, if the recipe would run over, trains on fewer scenes per epoch and validates
on fewer (the epochs and the schedule's shape stay), so the run still ends within the budget and says
what it gave up.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from mrcnn_course.model.maskrcnn import MaskRCNN, maskrcnn_small
from mrcnn_course.training import data, training_step
from mrcnn_course.training.pretrained import load_pretrained_small
from mrcnn_course.training.recipe import Recipe, epoch_scenes, optimizer_for, recipe_scenes
from mrcnn_course.training.training_step import GradientLimit, step_batch
from mrcnn_course.training.validation import validation_losses, validation_metrics

# seconds: the course's budget for a notebook's training run, validation included: the default recipe's run
# (benchmarks/TUNING.md's run 20) with room to spare for a slower laptop
TRAINING_BUDGET = 360.0
PROBE_STEPS = 3  # timed steps per model, after one untimed step (the first pays for memory allocation)
PROBE_IMAGES = 8  # validation scenes timed per model
VALIDATION_SHARE = 0.25  # of the budget, at most, when the recipe has to shrink


@dataclass(frozen=True)
class BudgetFit:
    """What fit_to_budget measured and decided. str() is the report a notebook prints."""

    recipe: Recipe  # the recipe to train with: the one given, or one with fewer scenes
    asked: Recipe  # the recipe given
    seconds_per_step: float
    seconds_per_validation_image: float  # validation losses and evaluation (mAP), per scene
    budget: float

    def estimate(self, recipe: Recipe) -> float:
        """Seconds that `recipe` takes, by the measured times."""
        return recipe.epochs * (
            recipe.steps_per_epoch * self.seconds_per_step + recipe.val_images * self.seconds_per_validation_image
        )

    def __str__(self) -> str:
        asked, fitted = self.asked, self.recipe
        measured = (
            f"a training step takes {self.seconds_per_step:.2f} s here and validating a scene "
            f"{self.seconds_per_validation_image:.2f} s"
        )
        if fitted == asked:
            return (
                f"{measured}: {asked.epochs} epochs of {asked.images_per_epoch} scenes take about "
                f"{self.estimate(asked) / 60:.1f} min, within the budget of {self.budget / 60:g} min."
            )
        return (
            f"{measured}: {asked.epochs} epochs of {asked.images_per_epoch} scenes (and {asked.val_images} "
            f"validation scenes) would take about {self.estimate(asked) / 60:.1f} min, over the budget of "
            f"{self.budget / 60:g} min, so each epoch trains on {fitted.images_per_epoch} scenes and validates on "
            f"{fitted.val_images} instead (about {self.estimate(fitted) / 60:.1f} min). Fewer steps learn less: "
            f"expect a lower mAP than the reference's. Faster components (e.g. an NMS that drops the "
            f"suppressed boxes in bulk) or a larger budget give back the steps."
        )


def fit_to_budget(
    recipe: Recipe | None = None, seconds: float = TRAINING_BUDGET, train_step: Callable | None = None
) -> BudgetFit:
    """Time `train_step` (default training_step.train_step) and validation with the components active now, on the
    recipe's own scenes, and return a BudgetFit whose recipe ends within `seconds`: the recipe itself if it
    fits; else validation is cut to VALIDATION_SHARE of the budget (keeping the shown scenes and a batch)
    and images_per_epoch to the most whole batches (at least one) that fit in the rest.

    A run goes from a new model to a trained one, and the trained one is slower (more proposals are
    positives for the mask head, more detections to evaluate): both are timed, a new small model and
    the shipped trained one, and the run is costed at their mean. The global random state is left as it was.
    """
    asked = recipe or Recipe()
    train_step = train_step or training_step.train_step
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(asked.seed)
        timings = [
            _time_steps_and_validation(model, asked, train_step)
            for model in (maskrcnn_small(num_classes=len(data.CLASSES)), load_pretrained_small())
        ]
    per_step, per_image = (sum(values) / len(values) for values in zip(*timings))
    fit = BudgetFit(asked, asked, per_step, per_image, seconds)
    if fit.estimate(asked) <= seconds:
        return fit
    per_epoch = seconds / asked.epochs
    least = min(asked.val_images, max(asked.shown_images, asked.batch_size))
    val_images = max(least, min(asked.val_images, math.floor(VALIDATION_SHARE * per_epoch / per_image)))
    steps = math.floor((per_epoch - val_images * per_image) / per_step)
    steps = max(1, min(steps, asked.steps_per_epoch))
    return replace(fit, recipe=replace(asked, images_per_epoch=steps * asked.batch_size, val_images=val_images))


def _time_steps_and_validation(model: MaskRCNN, recipe: Recipe, train_step: Callable) -> tuple[float, float]:
    """Seconds per training step and per validated scene for `model` (changed by the steps: pass a copy),
    each timed on what train() runs: the recipe's first batches (drawing their scenes included), and an epoch's
    validation."""
    model.train()
    optimizer = GradientLimit(optimizer_for(model, recipe), model.parameters(), recipe.grad_clip)
    dataset, order = epoch_scenes(replace(recipe, images_per_epoch=(PROBE_STEPS + 1) * recipe.batch_size), 1)
    train_step(model, optimizer, *step_batch(dataset, order, recipe.batch_size, 1))
    started = time.perf_counter()
    for k in range(2, PROBE_STEPS + 2):  # drawing the step's scenes counts, as in train() (about a tenth of a step)
        train_step(model, optimizer, *step_batch(dataset, order, recipe.batch_size, k))
    per_step = (time.perf_counter() - started) / PROBE_STEPS
    validation = recipe_scenes(recipe, 0, min(PROBE_IMAGES, recipe.val_images))
    started = time.perf_counter()
    validation_losses(model, validation, recipe.batch_size, recipe.seed)
    validation_metrics(model, validation, recipe)
    return per_step, (time.perf_counter() - started) / len(validation)
