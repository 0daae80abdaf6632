"""What train() measures on the validation scenes after each epoch: the losses, then the metrics.

    val_losses = validation_losses(model, scenes, batch_size=8, seed=0)   # {TOTAL: float, 'loss_mask': float, ...}
    metrics = validation_metrics(model, scenes, recipe)                    # recall, precision, 4 mAPs, shown scenes
    trace = new_trace(recipe, scenes)                                      # no epochs yet: the shown scenes

The losses are the training's, measured without training; the metrics are what the detections are
worth (evaluation.evaluate, pycocotools). Under torchrun the losses are shared out between the processes,
and rank 0 alone computes the metrics (pycocotools is not split up) and sends them to the others.
"""

import torch
from torch import nn

from mrcnn_course.model.maskrcnn import MaskRCNN
from mrcnn_course.training import data, evaluation
from mrcnn_course.training.distributed import SINGLE_PROCESS, World, to_device
from mrcnn_course.training.encoding import encode_detections, encode_image
from mrcnn_course.training.recipe import Recipe
from mrcnn_course.training.training_trace import LOSS_NAMES, LOSS_PARTS, TrainingTrace


@torch.no_grad()
def validation_losses(
    model: MaskRCNN, dataset, batch_size: int, seed: int, world: World = SINGLE_PROCESS
) -> dict[str, float]:
    """Mean losses (TOTAL and LOSS_PARTS) per image on `dataset`, without changing the model.

    The model runs in training mode (only then does it compute losses), but its batch-norm layers are
    switched to eval mode: they normalize with their running statistics, as at inference, and those
    statistics are not updated. The anchors and RoIs that the losses sample are drawn from a generator
    seeded with `seed` (torch.random.fork_rng), so every epoch is measured on the same samples and the
    training's random stream is not touched. With several processes each takes its share of the images.
    """
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(1 + len(LOSS_NAMES), dtype=torch.float64, device=device)  # images, then LOSS_NAMES
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mine = world.share(range(len(dataset)))
            for start in range(0, len(mine), batch_size):
                images, targets = to_device(
                    data.collate([dataset[i] for i in mine[start : start + batch_size]]), device
                )
                losses = model(images, targets)
                parts = torch.stack([losses[k] for k in LOSS_PARTS]).double()
                sums += len(images) * torch.cat([parts.new_ones(1), parts.sum(0, keepdim=True), parts])
    finally:
        model.train(was_training)
    world.sum(sums)
    return dict(zip(LOSS_NAMES, (sums[1:] / sums[0]).tolist()))


def validation_metrics(model: MaskRCNN, dataset, recipe: Recipe, world: World = SINGLE_PROCESS) -> dict:
    """Recall, precision, the four mAPs and the predictions on the first recipe.shown_images scenes, as EpochRecord's
    fields of those names (rank 0 evaluates, the others receive its metrics)."""
    metrics = None
    if world.is_rank_0:
        result = evaluation.evaluate(model, dataset, batch_size=recipe.batch_size)
        metrics = {
            **{k: result[k] for k in ("recall", "precision", "box_map", "box_map50", "mask_map", "mask_map50")},
            "predictions": [encode_detections(p) for p in result["predictions"][: recipe.shown_images]],
        }
    return world.broadcast_from_rank_0(metrics)


def new_trace(recipe: Recipe, dataset) -> TrainingTrace:
    """A trace with no epochs yet: the first recipe.shown_images validation scenes and their ground truth."""
    shown = [dataset[i] for i in range(min(recipe.shown_images, len(dataset)))]
    return TrainingTrace(
        [],
        [encode_image(image) for image, _ in shown],
        list(data.CLASSES),
        recipe.to_dict(),
        recipe.seed,
        [encode_detections(target) for _, target in shown],
    )
