"""fit_to_budget: the package's steps and the learner's, alternated, choose a recipe of the menu that fits the
budget, and the report says whose the time is: a component over the speed limit, or the machine.

Tiny recipes (64-px scenes), so that each timed fit takes a few seconds; what the report says is tested on
BudgetFits built from given times, so that it does not depend on the machine's load.
"""

import math
import time
from dataclasses import replace

import pytest
import torch

from mrcnn_course.model import box_ops
from mrcnn_course.training.budget import (
    BUDGET_FILLED,
    REST_OF_STEP,
    SPEED_LIMIT,
    STEP_SHARES,
    WHOLE_RUN_OVER_PROBE,
    BudgetFit,
    Machine,
    Times,
    choose_threads,
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
    assert free.fits(free.recipe) and not free.fits(
        replace(free.recipe, images_per_epoch=free.recipe.images_per_epoch + 8)
    )


def test_the_estimate_leaves_room_for_the_work_between_epochs():
    fit = fitted(PACKAGE, PACKAGE)
    assert fit.fits(fit.recipe) and fit.estimate(fit.recipe) <= BUDGET_FILLED * 360 < 360
    tight = fitted(PACKAGE, PACKAGE, budget=fit.estimate(RECIPE) / ((1 + BUDGET_FILLED) / 2))
    assert tight.estimate(RECIPE) < tight.budget and not tight.fits(RECIPE)  # under the budget, not under its margin
    assert tight.recipe != RECIPE and tight.fits(tight.recipe)  # so validation shrinks
    assert f"seconds={math.ceil(tight.estimate(RECIPE) / BUDGET_FILLED / 60) * 60}" in str(tight)


def test_a_slow_machine_is_named_and_the_learner_is_not_blamed():
    slow_machine = Times(step=0.8, validation_scene=0.15, parts={"nms": 0.06, REST_OF_STEP: 0.74})
    report = str(fitted(slow_machine, slow_machine))
    assert "This machine runs the reference's step in 0.80 s" in report
    assert "Your components" not in report and "Your step" not in report and "busy" not in report
    assert "fit_to_budget(recipe, seconds=" in report  # what to do
    busy = str(fitted(slow_machine, slow_machine, BUSY))
    assert "This machine is busy: other programs want its 2 CPUs too (a load average of 3.0" in busy
    assert "not your code" in busy and "Your components" not in busy


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
    assert fit.estimate(TINY) == pytest.approx(WHOLE_RUN_OVER_PROBE * 2 * (10 * 0.5 + 8 * 0.25))
    assert fit.time_limit >= 60 and fit.step_ratio == 1.0


def step_taking(seconds_per_thread: dict[int, float]):
    """A stand-in training step that takes the given seconds at each torch thread count: the machine's part,
    which no test can choose, made up; what choose_threads does with it is real."""
    return lambda: time.sleep(seconds_per_thread[torch.get_num_threads()])


@pytest.fixture
def four_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_on_shared_cpus_fewer_threads_are_kept_when_their_steps_are_faster(four_threads):
    shared = {4: 0.06, 2: 0.03, 1: 0.012}  # every thread count waits on the others' work
    tried = choose_threads(step_taking(shared))
    assert torch.get_num_threads() == 1 and set(tried) == {4, 2, 1}
    assert tried[1] == pytest.approx(0.012, abs=0.01) and tried[4] > tried[1]
    torch.set_num_threads(4)
    middle = {4: 0.06, 2: 0.02, 1: 0.03}  # the descent stops at the first count that is not faster
    assert set(choose_threads(step_taking(middle))) == {4, 2, 1} and torch.get_num_threads() == 2


def test_on_free_cpus_torchs_thread_count_is_kept(four_threads):
    free = {4: 0.01, 2: 0.02, 1: 0.04}
    choose_threads(step_taking(free))
    assert torch.get_num_threads() == 4
    barely = {4: 0.030, 2: 0.029, 1: 0.05}  # fewer threads must win by FEWER_THREADS_GAIN, not by noise
    choose_threads(step_taking(barely))
    assert torch.get_num_threads() == 4


def test_the_users_thread_count_stands(four_threads, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's (or autograding's JOBS) choice
    assert choose_threads(lambda: pytest.fail("not timed: the user chose")) == {}
    assert torch.get_num_threads() == 4
    torch.set_num_threads(1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose_threads(lambda: pytest.fail("nothing to choose from")) == {} and torch.get_num_threads() == 1


def test_the_report_says_which_thread_counts_were_timed():
    shared = replace(QUIET, load=2.1, threads=1, tried={2: 0.89, 1: 0.51})
    report = str(fitted(PACKAGE, PACKAGE, shared))
    assert (
        "torch splits each step over threads, and here 1 thread took 0.51 s a step, 2 threads took 0.89 s a step: it "
        "uses 1 (other programs share the 2 CPUs, and more threads wait for them)." in report
    )
    free = str(fitted(PACKAGE, PACKAGE, replace(shared, threads=2)))
    assert "it uses 2." in free and "other programs" not in free
    assert "torch splits" not in str(fitted(PACKAGE, PACKAGE))  # nothing timed, nothing said
    assert shared.busy  # fewer threads were faster: other work is on the CPUs
    assert not replace(shared, threads=2).busy  # more threads kept: the load is this process's own, or harmless
    assert BUSY.busy and not QUIET.busy  # nothing timed: the load average decides


def test_fitting_times_the_thread_counts_and_trains_on_the_one_it_keeps(four_threads):
    fit = fit_to_budget(TINY, seconds=600)
    assert set(fit.machine.tried) == {4, 2, 1}
    assert fit.machine.threads == torch.get_num_threads() and fit.machine.threads in fit.machine.tried
    assert f": it uses {fit.machine.threads}" in str(fit)
