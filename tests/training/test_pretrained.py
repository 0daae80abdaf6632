"""The shipped model: small, loads in eval mode, finds the dog and the cat, and its recipe is today's default.

A few seconds: one load and two inferences.
"""

import json

import pytest
import torch

from mrcnn_course.model.maskrcnn import SmallConfig
from mrcnn_course.training import data, evaluation
from mrcnn_course.training.pretrained import (
    FOLDER,
    RECIPE,
    WEIGHTS,
    load_pretrained_small,
    model_config_dict,
    pretrained_recipe,
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
