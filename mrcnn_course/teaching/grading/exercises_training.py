"""The exercise of the capstone's training step: train_step (lesson 07).

train_step is not a component: the model never calls it. Its reference is training_step.train_step,
and a case compares what a step leaves behind, not only what it returns: the losses it reports and
the model's weights after the step. Both steps start from copies of the same tiny model and
optimizer, and draw the same random anchors and RoIs (the same seed).
"""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = ["check_train_step"]

from collections.abc import Callable
from typing import Any

import torch

from mrcnn_course.model.backbone import BackboneWithFPN, BasicBlock, ResNetConfig
from mrcnn_course.model.maskrcnn import MaskRCNN, SmallConfig
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake
from mrcnn_course.training import (  # training_step.train_step, the step train() takes, is the reference
    data,
    training_step,
)
from mrcnn_course.training.training_trace import TOTAL

STEP_SEED = 0  # both steps sample the same anchors and RoIs
IMAGE_SIZE = 64


def tiny_model() -> MaskRCNN:
    """A Mask R-CNN small enough that a training step takes a fraction of a second: the small model's
    anchors and thresholds, with one basic block per stage, 8 to 64 channels and narrow heads."""
    backbone = BackboneWithFPN(
        ResNetConfig(block=BasicBlock, layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_channels=8), fpn_channels=16
    )
    return MaskRCNN(
        backbone,
        len(data.CLASSES),
        min_size=IMAGE_SIZE,
        max_size=IMAGE_SIZE,
        anchor_sizes=SmallConfig.anchor_sizes,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=50,
        rpn_batch_size_per_image=32,
        representation_size=32,
        box_batch_size_per_image=16,
        mask_layers=(16,),
        mask_dim_reduced=16,
    )


def _after_the_step(train_step: Callable, args: tuple) -> dict[str, Any] | None:
    """What a case compares: the losses the step returns (floats as float64 tensors, so that they compare
    within the tolerance) and the model's weights after it."""
    model = args[0]
    for name, parameter in model.named_parameters():  # a deep copy of a model loses its gradients: put them back
        if name in getattr(model, "leftover_gradients", {}):
            parameter.grad = model.leftover_gradients[name].clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(STEP_SEED)
        losses = train_step(*args)
    if losses is None:
        return None  # run() then asks whether the `return` was forgotten
    if isinstance(losses, dict):
        losses = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in losses.items()}
    return {"losses": losses, "weights after the step": {n: p.detach() for n, p in model.named_parameters()}}


def _step_case(
    name: str, seeds: list[int], optimizer: str, stale_gradients: bool = False, empty: bool = False, extra: bool = False
) -> Case:
    model = tiny_model().train()
    scenes = [data.make_scene(seed, image_size=IMAGE_SIZE, classes=data.CLASSES[1:]) for seed in seeds]
    images = [image for image, _ in scenes]
    targets = [{key: target[key] for key in ("boxes", "labels", "masks")} for _, target in scenes]
    if empty:  # an image without objects: every RoI is background
        targets[-1] = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
        }
    chosen: torch.optim.Optimizer
    if optimizer == "AdamW":
        chosen = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        note = "AdamW(lr=2e-3, weight_decay=1e-4)"
    else:
        chosen = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9 if "momentum" in optimizer else 0.0)
        note = optimizer
    if stale_gradients:  # as if an earlier batch's gradients were still there (_after_the_step puts them in)
        # an attribute of the model's own: nn.Module's typing allows only tensors and modules there
        model.leftover_gradients = {name: torch.randn_like(p) for name, p in model.named_parameters()}  # type: ignore[assignment]
    notes = {
        "model": f"a tiny Mask R-CNN (6 classes, 64-px images), training mode"
        f"{', with gradients left from before' if stale_gradients else ''}",
        "optimizer": note,
        "targets": "; ".join(
            f"boxes {tuple(t['boxes'].shape)}, labels {t['labels'].tolist()}, masks {tuple(t['masks'].shape)}"
            for t in targets
        ),
    }
    return Case(name, (model, chosen, images, targets), notes=notes, extra=extra)


def _step_cases() -> list[Case]:
    return [
        _step_case("one image, SGD", [1], "SGD(lr=0.01)"),
        _step_case("AdamW, as in the course's training", [2], "AdamW"),
        _step_case("gradients left from an earlier step", [3], "SGD(lr=0.01)", stale_gradients=True),
        _step_case("an image without objects", [4], "SGD(lr=0.01)", empty=True, extra=True),
        _step_case(
            "two images, SGD with momentum, old gradients",
            [5, 6],
            "SGD(lr=0.01, momentum=0.9)",
            stale_gradients=True,
            extra=True,
        ),
    ]


def _step_without(*left_out: str) -> Callable:
    """The reference step with some of its calls left out ("zero_grad", "step"), or the gradients
    cleared after backward ("zero_grad_late")."""

    def step(model, optimizer, images, targets):
        losses = model(images, targets)
        loss = sum(losses.values())
        if "zero_grad" not in left_out:
            optimizer.zero_grad()
        loss.backward()
        if "zero_grad_late" in left_out:
            optimizer.zero_grad()
        if "step" not in left_out:
            optimizer.step()
        return {TOTAL: loss.item(), **{name: value.item() for name, value in losses.items()}}

    return step


def _tensors_returned(model, optimizer, images, targets):
    losses = training_step.train_step(model, optimizer, images, targets)
    return {name: torch.tensor(value) for name, value in losses.items()}


@exercise(
    cases=_step_cases,
    hint="losses = model(images, targets) (a dict of five); loss = their sum; optimizer.zero_grad(); "
    "loss.backward(); optimizer.step(); return {'total': loss.item(), and each loss's name: its .item()}.",
    steps=(
        "Ask the model for its losses on the batch.",
        "Add them up.",
        "Clear the gradients, backpropagate the sum, and let the optimizer take its step.",
        "The record: the total and each loss by name, each as a Python number (Tensor.item).",
    ),
    mistakes=(
        Mistake("the weights did not move: call optimizer.step() after loss.backward().", _step_without("step")),
        Mistake(
            "clear the old gradients BEFORE backward (optimizer.zero_grad()): backward adds to whatever "
            "gradients are already there.",
            _step_without("zero_grad"),
        ),
        Mistake(
            "optimizer.zero_grad() came after backward: it cleared the new gradients before the step could use them.",
            _step_without("zero_grad_late"),
        ),
        Mistake(
            "return plain Python floats ({name: value.item()}): tensors keep the whole graph of the step "
            "alive, and the training trace stores numbers.",
            _tensors_returned,
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    reference=training_step.train_step,
    outcome=_after_the_step,
)
def check_train_step(train_step: Callable, extra: bool = False) -> None:
    """Check your train_step(model, optimizer, images, targets) -> {name: float} against the reference step,
    on copies of the same tiny model: the losses it returns and the weights it leaves."""
