"""The shipped model: small, loads in eval mode, finds the dog and the cat, and its recipe is today's default;
the reference's figures for every recipe of the budget's menu ship beside it, and are what training gives.

A few seconds (one load, two inferences, two tiny trainings) but for the slow tests, which evaluate and train.
"""

import json
from dataclasses import replace

import pytest
import torch
from conftest import TWO_EPOCHS

from mrcnn_course.model.maskrcnn import SmallConfig
from mrcnn_course.training import data, evaluation, pretrained
from mrcnn_course.training.budget import STEP_SHARES, recipe_share
from mrcnn_course.training.loop import train
from mrcnn_course.training.pretrained import (
    FOLDER,
    HELD_OUT_SCENES,
    RECIPE,
    REFERENCE_FIGURES,
    WEIGHTS,
    compare_with_reference,
    held_out_figures,
    load_pretrained_small,
    model_config_dict,
    pretrained_recipe,
    reference_figures,
    training_recipe,
)
from mrcnn_course.training.recipe import Recipe


@pytest.fixture(scope="module")
def model():
    return load_pretrained_small()


def test_the_shipped_files_are_small():
    assert (FOLDER / WEIGHTS).stat().st_size <= 10 * 2**20
    assert json.loads((FOLDER / RECIPE).read_text())["command"].startswith("python -m mrcnn_course train")


def test_the_recorded_recipe_is_the_current_default():
    """If this fails, the default recipe or SmallConfig changed: retrain and re-export (see recipe.json's
    command), so that the shipped model is what the defaults train."""
    recorded = pretrained_recipe()
    assert recorded["recipe"] == Recipe().to_dict()
    assert recorded["model"] == model_config_dict(SmallConfig())
    assert recorded["seed"] == Recipe().seed
    assert recorded["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_it_loads_in_eval_mode_as_float32(model):
    assert not model.training and model.num_classes == len(data.CLASSES)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# The shipped model scores both animals of the demo scene well above the demo's threshold; a model that
# needs that threshold lowered to find them is not one to ship.
DEMO_SCORE = 0.5


def test_it_finds_the_dog_and_the_cat(model):
    """Each animal's best-scoring detection (among those whose mask overlaps it at IoU >= 0.5) is that animal."""
    image, target = data.dog_and_cat_scene()
    with torch.no_grad():
        found = model([image])[0]
    masks = (found["masks"][:, 0] > 0.5).to(torch.uint8)  # (T, H, W)
    for name in ("dog", "cat"):
        truth = target["masks"][target["labels"] == data.CLASSES.index(name)]  # (1, H, W)
        on_it = evaluation.mask_iou(masks, truth)[:, 0] >= 0.5  # (T,)
        assert on_it.any(), f"no detection covers the {name}: {found['labels'].tolist()}"
        best = found["scores"].masked_fill(~on_it, -1).argmax()
        label, score = data.CLASSES[found["labels"][best]], found["scores"][best].item()
        assert label == name and score >= DEMO_SCORE, f"on the {name}: {label} with score {score:.2f}"


def test_it_scores_well_on_fresh_scenes(model):
    """On scenes of the recipe's kind that training never saw, mask mAP@0.5 is close to the recorded figure."""
    recipe = Recipe()
    scenes = data.ShapesDataset(24, recipe.image_size, seed=123_456, classes=recipe.classes)
    result = evaluation.evaluate(model, scenes)
    assert result["mask_map50"] >= pretrained_recipe()["held_out_200"]["mask_map50"] - 0.15


def test_validation_settings_do_not_change_the_trained_weights():
    """reference_figures ignores val_images and shown_images: validation must leave the weights alone."""
    trained = [
        train(recipe=replace(TWO_EPOCHS, val_images=val, shown_images=1), progress=False).model.state_dict()
        for val in (1, 3)
    ]
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_the_reference_figures_ship_for_every_recipe_of_the_budgets_menu():
    recipe = Recipe()
    for share in STEP_SHARES:
        shared = recipe_share(recipe, share)
        found = reference_figures(replace(shared, val_images=12, shown_images=2))  # validation aside
        assert found is not None, f"no reference figures for {share:.0%} of the recipe"
        assert found["steps"] == shared.total_steps and found["recipe"] == training_recipe(shared)
        assert set(found["held_out"]) >= {"box_map", "box_map50", "mask_map", "mask_map50"}
    by_steps = sorted((run["steps"], run["held_out"]["mask_map50"]) for run in _shipped_runs())
    assert [figure for _, figure in by_steps] == sorted(figure for _, figure in by_steps)  # longer learns more
    assert reference_figures(replace(recipe, lr=1e-3)) is None  # another recipe: no figures
    assert reference_figures(replace(recipe, images_per_epoch=8 * 37)) is None  # a share off the menu


def _shipped_runs() -> list[dict]:
    return json.loads((FOLDER / REFERENCE_FIGURES).read_text())["runs"]


@pytest.mark.slow
def test_the_whole_recipes_figures_are_the_shipped_models(model):
    """About 20 s: the shipped model on the capstone's held-out scenes."""
    whole = reference_figures(Recipe())
    assert whole is not None
    measured = held_out_figures(model, Recipe())
    assert measured == pytest.approx(whole["held_out"], abs=0.005)  # another thread count: the last digits


@pytest.mark.slow
@pytest.mark.timeout(2400)  # a few minutes on a quiet machine; a busy one makes a thread's step several times slower
@pytest.mark.usefixtures("one_thread")
def test_the_smallest_recipes_figures_are_what_training_it_gives():
    """A few minutes: the package's model trained by the menu's smallest recipe, with one thread as shipped
    (benchmarks/reference_figures.py), reaches the shipped figures (the same sums: the same digits, unless the
    model's code changed the order of a sum since)."""
    smallest = replace(recipe_share(Recipe(), min(STEP_SHARES)), val_images=4)
    shipped = reference_figures(smallest)
    assert shipped is not None and shipped["threads"] == 1
    trained = train(recipe=smallest, progress=False).model
    assert held_out_figures(trained, smallest) == pytest.approx(shipped["held_out"], abs=0.01)


def test_the_comparison_is_with_the_reference_trained_alike_or_says_why_there_is_none(monkeypatch):
    recipe = recipe_share(Recipe(), 0.5)
    yours = {"mask_map50": 0.93}
    cut_short = compare_with_reference(yours, recipe, recipe.epochs - 1, HELD_OUT_SCENES)
    assert (
        f"stopped after epoch {recipe.epochs - 1} of {recipe.epochs}" in cut_short and "no fair comparison" in cut_short
    )
    assert "not one of them" in compare_with_reference(yours, replace(recipe, lr=1e-3), recipe.epochs, HELD_OUT_SCENES)
    assert "not one of them" in compare_with_reference(yours, recipe, recipe.epochs, 20)  # other scenes
    figures = {"steps": recipe.total_steps, "held_out": {"mask_map50": 0.94}}
    monkeypatch.setattr(pretrained, "reference_figures", lambda r: figures if r == recipe else None)
    assert ": level (within 0.02)" in compare_with_reference(yours, recipe, recipe.epochs, HELD_OUT_SCENES)
    below = compare_with_reference({"mask_map50": 0.90}, recipe, recipe.epochs, HELD_OUT_SCENES)
    assert "0.040 below" in below and "grading.load_components((name, ...))" in below
    assert "0.030 above" in compare_with_reference({"mask_map50": 0.97}, recipe, recipe.epochs, HELD_OUT_SCENES)
    short = recipe_share(Recipe(), 0.25)  # 225 steps
    figures["steps"] = short.total_steps
    monkeypatch.setattr(pretrained, "reference_figures", lambda r: figures)
    assert "still improving fast" in compare_with_reference(yours, short, short.epochs, HELD_OUT_SCENES)
