"""The recipe: its one-cycle schedule and the scenes of each epoch (fresh, or one set shuffled).
Also bad input: a bad recipe says which setting and why.
"""

import re
from dataclasses import replace

import pytest
import torch

from mrcnn_course.training.recipe import Recipe, epoch_scenes, one_cycle, optimizer_for, schedule_for

TINY = Recipe(epochs=3, images_per_epoch=8, batch_size=4, val_images=4, image_size=64, seed=3)


def test_one_cycle_rises_then_falls():
    factors = [one_cycle(step, 100, 0.25) for step in range(100)]
    assert factors[0] == pytest.approx(0.04) and factors[25] == 1.0 and factors[-1] < 0.01
    assert factors[:26] == sorted(factors[:26]) and factors[25:] == sorted(factors[25:], reverse=True)
    assert one_cycle(0, 1, 0.25) == pytest.approx(0.04)  # a one-step run works too


def test_the_schedule_runs_one_cycle_over_all_the_recipes_steps():
    optimizer = optimizer_for(torch.nn.Linear(2, 1), TINY)
    schedule = schedule_for(optimizer, TINY)
    assert TINY.total_steps == TINY.epochs * TINY.steps_per_epoch == 6
    for step in range(TINY.total_steps):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(TINY.lr * one_cycle(step, 6, TINY.warmup))
        optimizer.step()
        schedule.step()


def test_fresh_scenes_each_epoch_or_one_set_shuffled_each_epoch():
    first, second = (epoch_scenes(TINY, epoch) for epoch in (1, 2))
    assert first[1] == second[1] == list(range(8))
    assert not torch.equal(first[0][0][0], second[0][0][0])  # new scenes
    fixed = replace(TINY, fresh_images=False)
    (dataset_1, order_1), (dataset_2, order_2) = (epoch_scenes(fixed, epoch) for epoch in (1, 2))
    assert torch.equal(dataset_1[5][0], dataset_2[5][0])  # the same scenes
    assert sorted(order_1) == sorted(order_2) == list(range(8)) and order_1 != order_2  # in another order
    assert epoch_scenes(fixed, 2)[1] == order_2  # the same order on every run


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(grad_clip=-1), "grad_clip must be 0 (no limit) or a positive gradient norm (got -1)"),
        (dict(warmup=2), "warmup is a share of the steps, between 0 and 1 (got 2)"),
        (dict(lr=0), "lr must be a positive number (got 0)"),
        (dict(lr=float("nan")), "lr must be a positive number (got nan)"),
        (dict(weight_decay=-0.1), "weight_decay must lie in [0, 1) (got -0.1)"),
        (dict(image_size=8), "image_size must be an integer of at least 16 pixels (got 8)"),
        (dict(shown_images=-1), "shown_images must be at least 0 (got -1)"),
        (dict(num_objects=(3, 1)), "num_objects must be (fewest, most) with 0 <= fewest <= most (got (3, 1))"),
        (dict(batch_size=0), "batch_size must be at least 1 (got 0)"),
    ],
)
def test_a_bad_recipe_says_which_setting_and_why(setting, message):
    with pytest.raises(ValueError, match=re.escape("bad training recipe: ") + ".*" + re.escape(message)):
        Recipe(**setting)
