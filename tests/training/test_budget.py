"""fit_to_budget: a few timed steps decide how many scenes per epoch fit the course's training budget.

Tiny recipes (64-px scenes), so that each fit takes a second or two.
"""

import time
from dataclasses import replace

import pytest
import torch

from mrcnn_course.training import training_step
from mrcnn_course.training.budget import BudgetFit, fit_to_budget
from mrcnn_course.training.recipe import Recipe

TINY = Recipe(epochs=2, images_per_epoch=32, batch_size=4, val_images=8, image_size=64, seed=5)


def slow_step(model, optimizer, images, targets):
    """The course's step and a quarter of a second more, like a slow component."""
    time.sleep(0.25)
    return training_step.train_step(model, optimizer, images, targets)


def test_a_recipe_that_fits_is_kept():
    fit = fit_to_budget(TINY, seconds=600)
    assert fit.recipe == TINY and fit.seconds_per_step > 0 and fit.seconds_per_validation_image > 0
    assert fit.estimate(TINY) <= 600
    assert "within the budget of 10 min" in str(fit)


def test_a_slow_step_trains_on_fewer_scenes_within_the_budget():
    fit = fit_to_budget(TINY, seconds=4, train_step=slow_step)  # 16 steps of 0.25 s and more: over 4 s
    assert fit.seconds_per_step >= 0.25
    assert fit.recipe.images_per_epoch < TINY.images_per_epoch
    assert fit.recipe.images_per_epoch % TINY.batch_size == 0 and fit.recipe.images_per_epoch >= TINY.batch_size
    assert 4 <= fit.recipe.val_images <= TINY.val_images  # at least the shown scenes and a batch
    assert fit.recipe == replace(
        TINY, images_per_epoch=fit.recipe.images_per_epoch, val_images=fit.recipe.val_images
    )  # nothing else changed
    assert fit.estimate(fit.recipe) <= 4 or fit.recipe.steps_per_epoch == 1
    bigger = replace(TINY, images_per_epoch=fit.recipe.images_per_epoch + TINY.batch_size)
    assert fit.estimate(bigger) > 4  # the most scenes that fit
    report = str(fit)
    assert "over the budget" in report and f"trains on {fit.recipe.images_per_epoch} scenes and validates on" in report


def test_fitting_leaves_the_random_stream_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    fit_to_budget(TINY, seconds=600)
    assert torch.equal(torch.rand(3), expected)


def test_the_estimate_adds_steps_and_validation_per_epoch():
    fit = BudgetFit(TINY, TINY, seconds_per_step=0.5, seconds_per_validation_image=0.25, budget=60)
    assert fit.estimate(TINY) == pytest.approx(2 * (8 * 0.5 + 8 * 0.25))
