"""The model's input check: a bad image or target is refused with a ValueError that names it and the fix,
before anything runs; images and boxes are converted to the dtype of the model's weights."""

import re

import numpy as np
import pytest
import torch

from mrcnn_course.model.input_checks import check_images_and_targets
from mrcnn_course.model.maskrcnn import maskrcnn_small

BAD_INPUTS = [
    (torch.rand(1, 3, 32, 32), None, "list of Tensor"),
    ([torch.rand(32, 32, 3)], None, "permute"),
    ([torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)], None, "float() / 255"),
    ([], None, "empty"),
    (
        [torch.rand(3, 32, 32)],
        [
            {
                "boxes": torch.tensor([[5.0, 5, 2, 9]]),
                "labels": torch.tensor([1]),
                "masks": torch.zeros(1, 32, 32, dtype=torch.uint8),
            }
        ],
        "x2 > x1",
    ),
    (
        [torch.rand(3, 32, 32)],
        [{"boxes": torch.zeros(1, 5), "labels": torch.tensor([1]), "masks": torch.zeros(1, 32, 32, dtype=torch.uint8)}],
        "Tensor[G, 4]",
    ),
    (
        [torch.rand(3, 32, 32)],
        [
            {
                "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, dtype=torch.int32),
                "masks": torch.zeros(0, 32, 32, dtype=torch.uint8),
            }
        ],
        "int64",
    ),
    ([torch.rand(3, 32, 32)], [{"boxes": torch.zeros(0, 4)}], "no 'labels'"),
    ([torch.rand(3, 32, 32)], [], "1 images but 0 targets"),
]


@pytest.mark.parametrize("images, targets, message", BAD_INPUTS)
def test_bad_input_gets_a_clear_message(images, targets, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_images_and_targets(images, targets, training=targets is not None)


def test_training_without_targets_is_refused():
    with pytest.raises(ValueError, match="needs targets"):
        check_images_and_targets([torch.rand(3, 8, 8)], None, training=True)


def target(boxes=((2.0, 2, 20, 20), (10, 10, 40, 30)), labels=(1, 2), size=(64, 64), **changes) -> dict:
    """A good two-object target for a 64 x 64 image, with `changes` replacing its entries."""
    good = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.as_tensor(labels),
        "masks": torch.ones(len(boxes), *size, dtype=torch.uint8),
    }
    return {**good, **changes}


# ----- training targets (the model's input check) -----
BAD_TARGETS = [
    (
        target(labels=(1, 7)),
        "target 0 object 1 has label 7 but the model has 6 classes (labels 1 to 5, 0 is the "
        "background): build the model with num_classes=8",
    ),
    (
        target(labels=((1,), (2,))),
        "target 0 labels have shape (2, 1): expected Tensor[G], one label per box (labels.flatten()",
    ),
    (
        target(masks=torch.ones(1, 64, 64, dtype=torch.uint8)),
        "target 0 masks have shape (1, 64, 64) for 2 boxes: expected Tensor[G, H, W], one mask per box",
    ),
    (target(labels=(1, 2, 3)), "target 0 has 3 labels for 2 boxes: give one label per box"),
    (
        target(masks=torch.ones(2, 32, 32, dtype=torch.uint8)),
        "target 0 masks are 32 x 32 but image 0 is 64 x 64: each mask covers its whole image",
    ),
    (target(labels=(0, 2)), "target 0 object 0 has label 0: labels start at 1 (0 is the background"),
    (target(labels=(1, -1)), "target 0 object 1 has label -1: labels start at 1"),
    (target(boxes=((5.0, 5, 2, 9), (1, 1, 9, 9))), "target 0 box 0 is [5.0, 5.0, 2.0, 9.0]: boxes need x2 > x1"),
    (
        target(boxes=((1.0, 1, float("nan"), 9), (1, 1, 9, 9))),
        "target 0 box 0 is [1.0, 1.0, nan, 9.0]: box coordinates must be finite",
    ),
    (target(boxes=((0.0, 0, 1, 1, 1),)), "target 0 boxes have shape (1, 5): expected Tensor[G, 4]"),
    (target(labels=torch.tensor([1, 2], dtype=torch.int32)), "target 0 labels have dtype torch.int32: expected int64"),
    ({"boxes": torch.zeros(0, 4)}, "target 0 has no 'labels'"),
    (
        target(masks=torch.ones(2, 64, 64, dtype=torch.uint8) * 255),
        "target 0: masks hold 0 and 1; these hold values up to 255 (the first in mask 0 at row 0, column 0): "
        "divide by 255 (or use mask > 0)",
    ),
    (
        target(masks=torch.ones(2, 64, 64) * 255),  # float masks saved 0/255 too
        "these hold values up to 255 (the first in mask 0 at row 0, column 0): divide by 255",
    ),
    (
        target(masks=torch.ones(2, 64, 64, dtype=torch.int64) * 3),  # a label map, not one mask per object
        "target 0: masks hold 0 and 1; these hold values up to 3 (the first in mask 0 at row 0, column 0): "
        "use mask > 0",
    ),
    (
        target(masks=-torch.ones(2, 64, 64, dtype=torch.int8)),
        "target 0: masks hold 0 and 1; these hold negative values, down to -1 (the first in mask 0 at row 0, "
        "column 0): use mask > 0",
    ),
    (
        target(masks=torch.ones(2, 64, 64) * 0.5),
        "target 0: masks hold 0 and 1; these hold 0.5 (the first in mask 0 at row 0, column 0): use mask > 0.5 "
        "(a mask resized bilinearly? resize masks with mode='nearest')",
    ),
    (target(masks=torch.full((2, 64, 64), float("nan"))), "target 0: masks hold 0 and 1; these hold nan"),
    (
        target(boxes=((2.0, 2, 20, 20), (70, 10, 90, 30))),
        "target 0 box 1 is [70.0, 10.0, 90.0, 30.0] but image 0 is 64 x 64 (height x width): the box lies wholly "
        "outside it; boxes are (x1, y1, x2, y2) in this image's pixels (made for another size? resize the boxes",
    ),
    (target(boxes=((-20.0, 2, 0, 20), (1, 1, 9, 9))), "target 0 box 0 is [-20.0, 2.0, 0.0, 20.0] but image 0 is 64"),
    (target(boxes=((2.0, 64, 20, 80), (1, 1, 9, 9))), "target 0 box 0 is [2.0, 64.0, 20.0, 80.0] but image 0 is 64"),
    (target(boxes=((2.0, -9, 20, 0), (1, 1, 9, 9))), "target 0 box 0 is [2.0, -9.0, 20.0, 0.0] but image 0 is 64"),
    (
        {**target(), "labels": [1, 2]},
        "target 0 labels are a list, not a tensor: expected int64 Tensor[G] of class ids from 1 (convert them "
        "with torch.as_tensor)",
    ),
    (
        {**target(), "boxes": np.zeros((2, 4))},
        "target 0 boxes are a ndarray, not a tensor: expected float Tensor[G, 4]",
    ),
    ([1, 2], "target 0 is a list: each target is a dict of boxes, labels and masks tensors"),
]


@pytest.mark.parametrize("bad, message", BAD_TARGETS)
def test_bad_training_targets_are_named_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_images_and_targets([torch.rand(3, 64, 64)], [bad], training=True, num_classes=6)


@pytest.mark.parametrize(
    "good",
    [
        target(masks=torch.ones(2, 64, 64, dtype=torch.bool)),
        target(masks=torch.ones(2, 64, 64)),  # float 0 and 1
        target(masks=torch.zeros(2, 64, 64, dtype=torch.int64)),
        target(boxes=((-10.0, -5, 20, 20), (50, 50, 90, 70))),  # partly outside: an object cut by the frame
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 64, 64)},
    ],
)
def test_good_targets_pass(good):
    check_images_and_targets([torch.rand(3, 64, 64)], [good], training=True, num_classes=6)


def test_the_model_refuses_masks_of_0_and_255_before_training_on_them():
    """A 0/255 mask, as image tools save them, would train on with a mask loss far too big: refused first."""
    model = maskrcnn_small(num_classes=3).train()
    with pytest.raises(ValueError, match=re.escape("target 0: masks hold 0 and 1; these hold values up to 255")):
        model([torch.rand(3, 64, 64)], [target(masks=torch.ones(2, 64, 64, dtype=torch.uint8) * 255)])
    with pytest.raises(ValueError, match=re.escape("target 1 box 0 is [100.0, 2.0, 120.0, 20.0] but image 1 is 64")):
        model([torch.rand(3, 64, 64)] * 2, [target(), target(boxes=((100.0, 2, 120, 20), (1, 1, 9, 9)))])


def test_the_model_checks_targets_against_its_own_classes():
    """The model passes its num_classes to the check: no IndexError from deep inside cross_entropy."""
    model = maskrcnn_small(num_classes=3).train()
    with pytest.raises(ValueError, match=re.escape("has label 5 but the model has 3 classes")):
        model([torch.rand(3, 64, 64)], [target(labels=(1, 5))])
    with pytest.raises(ValueError, match=re.escape("1 images but 2 targets")):
        model([torch.rand(3, 64, 64)], [target(), target()])


# ----- images -----
def with_value(value: float, at=(1, 2, 3)) -> torch.Tensor:
    image = torch.rand(3, 64, 64)
    image[at] = value
    return image


BAD_IMAGES = [
    (with_value(float("nan")), "image 0 has 1 NaN or infinite values (the first at channel 1, row 2, column 3)"),
    (with_value(float("inf")), "image 0 has 1 NaN or infinite values"),
    (torch.rand(3, 64, 64) * 255, "expected floats in [0, 1]; divide 0-255 values by 255"),
    (torch.randn(3, 64, 64), "the model normalizes them (ImageNet mean and std) itself"),
    (
        torch.rand(3, 2, 500),
        "image 0 is 2 x 500 (height x width): resized so its long side is at most 128, its "
        "short side would be 0 pixels; crop it",
    ),
    (torch.rand(64, 64, 3), "expected Tensor[3, H, W] (channels last? use image.permute(2, 0, 1))"),
    (torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), "(for uint8 pixels use image.float() / 255)"),
    (np.zeros((8, 8, 3)), "image 0 is a ndarray, not a tensor: convert it with"),
]


@pytest.mark.parametrize("image, message", BAD_IMAGES)
def test_bad_images_are_named_with_the_fix(image, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_images_and_targets([image], max_size=128)


def test_a_slight_overshoot_of_bicubic_resampling_is_accepted():
    overshoot = torch.rand(3, 64, 64) * 1.1 - 0.05  # [-0.05, 1.05]
    assert check_images_and_targets([overshoot])[0][0] is overshoot


def test_a_batch_that_is_one_tensor_or_empty_is_refused():
    with pytest.raises(ValueError, match=re.escape("got one tensor of shape (1, 3, 8, 8): pass [image]")):
        check_images_and_targets(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="images is empty"):
        check_images_and_targets([])
    with pytest.raises(ValueError, match="in training mode the model needs targets"):
        check_images_and_targets([torch.rand(3, 8, 8)], None, training=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_of_another_float_dtype_are_converted_to_a_float32_models(dtype):
    image = torch.rand(3, 64, 64)
    model = maskrcnn_small(num_classes=6).eval()
    with torch.no_grad():
        expected, got = model([image])[0], model([image.to(dtype)])[0]
    assert check_images_and_targets([image.to(dtype)])[0][0].dtype == torch.float32
    if dtype == torch.float64:  # float64 -> float32 is exact for these values: the same detections
        assert torch.equal(expected["boxes"], got["boxes"])
    assert got["boxes"].dtype == got["scores"].dtype == got["masks"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_images_and_boxes_are_converted_to_the_weights_dtype(dtype):
    """The rule: a floating-point image, and each target's boxes, take the model's weights' dtype."""
    images, targets = check_images_and_targets(
        [torch.rand(3, 64, 64).to(dtype)], [target()], training=True, dtype=torch.float64
    )
    assert images[0].dtype == targets[0]["boxes"].dtype == torch.float64
    assert targets[0]["labels"].dtype == torch.int64 and targets[0]["masks"].dtype == torch.uint8


def test_a_float64_model_takes_float32_images_and_returns_float64():
    model = maskrcnn_small(num_classes=6).double().eval()
    with torch.no_grad():
        got = model([torch.rand(3, 64, 64)])[0]
    assert got["boxes"].dtype == got["scores"].dtype == got["masks"].dtype == torch.float64
    model.train()
    losses = model([torch.rand(3, 64, 64)], [target()])
    assert {loss.dtype for loss in losses.values()} == {torch.float64}
