"""fit_to_budget: the package's steps and the learner's, alternated, choose a recipe of the menu that fits the
budget, and the report says whose the time is: a component over the speed limit, or the machine.

Tiny recipes (64-px scenes), so that each timed fit takes a few seconds; what the report says is tested on
BudgetFits built from given times, so that it does not depend on the machine's load.
"""

import time
from dataclasses import replace

import pytest
import torch

from mrcnn_course.model import box_ops
from mrcnn_course.training.budget import (
    REST_OF_STEP,
    SPEED_LIMIT,
    STEP_SHARES,
    BudgetFit,
    Machine,
    Times,
    fit_to_budget,
)
from mrcnn_course.training.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Recipe(epochs=2, images_per_epoch=40, batch_size=4, val_images=8, image_size=64, seed=5)
QUIET = Machine(load=0.1, cpus=2, available=2, threads=2)
BUSY = Machine(load=3.0, cpus=2, available=2, threads=2)
RECIPE = Recipe()  # 9 epochs of 100 steps, 100 validation scenes
PACKAGE = Times(step=0.25, validation_scene=0.05, parts={"nms": 0.02, "roi_align": 0.03, REST_OF_STEP: 0.2})


def fitted(
    reference: Times, learner: Times | None, machine: Machine = QUIET, budget: float = 360.0, shares=STEP_SHARES
) -> BudgetFit:
    """The BudgetFit that fit_to_budget would return for these times (the same choice, without timing)."""
    from mrcnn_course.training.budget import _largest_that_fits

    fit = BudgetFit(RECIPE, RECIPE, reference, learner, machine, budget, shares)
    return replace(fit, recipe=_largest_that_fits(fit))


def test_a_recipe_that_fits_is_kept():
    fit = fitted(PACKAGE, PACKAGE)
    assert fit.recipe == RECIPE and fit.estimate(RECIPE) <= 360
    assert "within the budget of 6 min" in str(fit) and "Your components" not in str(fit)


def test_the_recipe_shrinks_to_the_largest_share_of_the_menu_that_fits():
    slow_machine = Times(step=0.5, validation_scene=0.1, parts={"nms": 0.04, REST_OF_STEP: 0.46})
    fit = fitted(slow_machine, slow_machine)
    shares = {round(share * RECIPE.images_per_epoch) for share in STEP_SHARES}
    assert fit.recipe.images_per_epoch in shares and fit.estimate(fit.recipe) <= 360
    larger = min(n for n in shares if n > fit.recipe.images_per_epoch)
    assert fit.estimate(replace(fit.recipe, images_per_epoch=larger, val_images=fit.recipe.shown_images)) > 360
    assert fit.recipe == replace(
        RECIPE, images_per_epoch=fit.recipe.images_per_epoch, val_images=fit.recipe.val_images
    )  # nothing else changed: the reference's figures are for this recipe
    assert max(RECIPE.shown_images, RECIPE.batch_size) <= fit.recipe.val_images <= RECIPE.val_images


def test_a_menu_without_the_whole_recipe_trains_its_share_and_shares_none_any_whole_batches():
    fit = fitted(PACKAGE, PACKAGE, shares=(0.25,))
    assert fit.recipe == replace(RECIPE, images_per_epoch=200) and "the menu holds only (0.25,)" in str(fit)
    slow_machine = Times(step=0.5, validation_scene=0.1, parts={REST_OF_STEP: 0.5})
    free = fitted(slow_machine, None, shares=None)
    assert (
        free.estimate(free.recipe)
        <= 360
        < free.estimate(replace(free.recipe, images_per_epoch=free.recipe.images_per_epoch + 8))
    )


def test_a_slow_machine_is_named_and_the_learner_is_not_blamed():
    slow_machine = Times(step=0.8, validation_scene=0.15, parts={"nms": 0.06, REST_OF_STEP: 0.74})
    report = str(fitted(slow_machine, slow_machine))
    assert "This machine runs the reference's step in 0.80 s" in report
    assert "Your components" not in report and "Your step" not in report and "busy" not in report
    assert "fit_to_budget(recipe, seconds=" in report  # what to do
    busy = str(fitted(slow_machine, slow_machine, BUSY))
    assert "The machine is busy: load 3.0 on 2 CPUs" in busy and "Your components" not in busy


def test_a_component_over_the_speed_limit_is_named_only_when_it_costs_steps():
    slow_nms = replace(PACKAGE, step=0.25 + 0.3, parts={**PACKAGE.parts, "nms": 0.32})  # 16x the package's
    fit = fitted(PACKAGE, slow_nms)
    assert fit.recipe != RECIPE and fit.slow_parts() == [("nms", 0.32, 0.02)]
    report = str(fit)
    assert "your nms takes 0.320 s of each step against the package's 0.020 s" in report
    assert f"over the speed limit of {SPEED_LIMIT:g}x" in report and "This machine" not in report
    within = replace(PACKAGE, step=0.25 + 0.03, parts={**PACKAGE.parts, "nms": 0.05})  # 2.5x: within the limit
    assert fitted(PACKAGE, within).slow_parts() == []
    tiny_but_slow = replace(PACKAGE, parts={**PACKAGE.parts, "resize": 0.004})  # 4x, but 0.3 ms of a step
    assert fitted(replace(PACKAGE, parts={**PACKAGE.parts, "resize": 0.001}), tiny_but_slow).slow_parts() == []


def test_a_short_recipe_is_kept_untimed():
    short = Recipe(epochs=2, images_per_epoch=8, batch_size=4, val_images=4, image_size=64)
    fit = fit_to_budget(short, train_step=lambda *args: pytest.fail("a short run is not timed"))
    assert fit.recipe == short and fit.reference is None and "untimed" in str(fit)


def test_the_timing_alternates_both_sides_and_clocks_each_components_own_time():
    calls = []

    def slow_nms(boxes, scores, iou_threshold):
        calls.append(1)
        time.sleep(0.02)
        return box_ops.nms(boxes, scores, iou_threshold)

    fit = fit_to_budget(TINY, seconds=600, components={"nms": slow_nms})
    assert fit.reference is not None and fit.learner is not None and calls
    extra = fit.learner.parts["nms"] - fit.reference.parts["nms"]
    assert extra >= 0.02  # at least one call a step, each 0.02 s longer
    # filter_proposals calls nms through the registry: the sleep is nms's own time, not filter_proposals'
    assert fit.learner.parts["filter_proposals"] < fit.reference.parts["filter_proposals"] + extra / 2
    assert fit.learner.step > fit.reference.step and fit.machine.threads == torch.get_num_threads()


def test_fitting_leaves_the_random_stream_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    fit_to_budget(TINY, seconds=600)
    assert torch.equal(torch.rand(3), expected)


def test_the_estimate_adds_steps_and_validation_per_epoch():
    fit = BudgetFit(TINY, TINY, Times(0.5, 0.25), None, QUIET, 60, STEP_SHARES)
    assert fit.estimate(TINY) == pytest.approx(2 * (10 * 0.5 + 8 * 0.25))
    assert fit.time_limit >= 60 and fit.step_ratio == 1.0
