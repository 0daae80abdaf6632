"""What train() measures after each epoch: validation losses that change nothing, metrics, the first trace."""

import torch

from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import data
from mrcnn_course.training.recipe import Recipe
from mrcnn_course.training.validation import new_trace, validation_losses


def test_validation_losses_leave_the_model_and_the_random_stream_alone():
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=len(data.CLASSES)).train()
    scenes = data.ShapesDataset(4, 64, seed=1)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = validation_losses(model, scenes, batch_size=2, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())  # BN statistics too
    assert model.training and all(m.training for m in model.modules())
    assert validation_losses(model, scenes, batch_size=2, seed=0) == first  # the same samples every time


def test_a_new_trace_holds_the_shown_scenes_and_no_epoch():
    recipe = Recipe(val_images=3, shown_images=5, image_size=64)  # more shown than there are: all 3
    scenes = data.ShapesDataset(3, 64, seed=1)
    trace = new_trace(recipe, scenes)
    assert trace.epochs == [] and len(trace.val_images) == 3 and trace.config == recipe.to_dict()
    assert torch.equal(trace.target(2)["labels"], scenes[2][1]["labels"])
