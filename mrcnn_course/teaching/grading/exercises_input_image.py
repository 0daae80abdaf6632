"""The exercises of stage 1, the input image: resize_boxes, resize, batch_images (lesson 01)."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_resize_boxes",
    "check_resize",
    "check_batch_images",
]

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mrcnn_course.model import input_image
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake

TRANSFORM = "torchvision.models.detection.transform"


def _boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _resize_boxes_cases() -> list[Case]:
    return [
        Case("twice the size", (_boxes([10, 20, 30, 40], [0, 0, 5, 5]), (100, 100), (200, 200))),
        Case("height and width scale differently", (_boxes([10, 20, 30, 40]), (100, 200), (50, 300))),
        Case("no boxes", (_boxes(), (64, 48), (128, 96))),
        Case("mapping back to a smaller original", (_boxes([12, 6, 90, 60], [0, 0, 128, 96]), (96, 128), (75, 100))),
        Case("odd sizes", (_boxes([1.5, 2.5, 30.25, 20]), (37, 53), (64, 91))),
        Case("a box on the image's border", (_boxes([0, 0, 53, 37]), (37, 53), (100, 143)), extra=True),
        Case("many boxes", (torch.rand(20, 4) * 50, (50, 60), (70, 31)), extra=True),
    ]


@exercise(
    cases=_resize_boxes_cases,
    hint="sizes are (height, width): x1 and x2 scale by new_width / original_width, y1 and y2 by "
    "new_height / original_height; boxes are (x1, y1, x2, y2); return Tensor[G, 4] (also for G = 0).",
    steps=(
        "Work out two ratios: the new height over the old one, the new width over the old one.",
        "Take the four columns of the boxes apart (Tensor.unbind along dim 1).",
        "Scale the two x columns with the width ratio and the two y columns with the height ratio.",
        "Put the four columns back together in their order (torch.stack along dim 1); with no boxes this "
        "still gives Tensor[0, 4].",
    ),
    mistakes=(
        Mistake(
            "x was scaled by the height ratio and y by the width ratio: sizes are (height, width).",
            lambda boxes, old, new: input_image.resize_boxes(boxes, old[::-1], new[::-1]),
        ),
        Mistake(
            "the ratio is upside down: new size / original size, not original / new.",
            lambda boxes, old, new: input_image.resize_boxes(boxes, new, old),
        ),
    ),
    atol=1e-4,
    rtol=1e-5,
    torchvision_names=(f"{TRANSFORM}.resize_boxes",),
)
def check_resize_boxes(resize_boxes: Callable, extra: bool = False) -> None:
    """Check your resize_boxes(boxes, original_size, new_size) -> Tensor[G, 4] against the reference."""


def _image(height: int, width: int) -> torch.Tensor:
    return torch.rand(3, height, width)


def _target(height: int, width: int, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    return {"boxes": boxes, "labels": torch.arange(1, len(boxes) + 1), "masks": masks}


def _resize_cases() -> list[Case]:
    return [
        Case("square image that needs no resizing", (_image(64, 64), 64, 64, None)),
        Case("short side up to min_size", (_image(40, 60), 80, 200, None)),
        Case("long image: max_size wins", (_image(20, 100), 40, 120, None)),
        Case("odd size", (_image(37, 53), 64, 100, None)),
        Case(
            "portrait image with boxes and masks",
            (_image(60, 40), 80, 160, _target(60, 40, _boxes([4, 10, 30, 50], [0, 0, 40, 60]))),
        ),
        Case("target with no objects", (_image(30, 40), 60, 80, _target(30, 40, _boxes()))),
        Case(
            "shrinking a large image",
            (_image(200, 300), 64, 90, _target(200, 300, _boxes([50, 20, 250, 180]))),
            extra=True,
        ),
        Case("target with boxes only", (_image(33, 45), 50, 70, {"boxes": _boxes([3, 4, 20, 30])}), extra=True),
    ]


def _without_max_size(image, min_size, max_size, target=None):
    return input_image.resize(image, min_size, math.inf, target)  # type: ignore[arg-type]  # the mistake: no max


def _without_recompute(image, min_size, max_size, target=None):
    _, target = input_image.resize(image, min_size, max_size, target)
    height, width = image.shape[-2:]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0]
    return image, target


def _boxes_not_rescaled(image, min_size, max_size, target=None):
    resized, new_target = input_image.resize(image, min_size, max_size, target)
    assert new_target is not None and target is not None  # its cases all have a target
    new_target["boxes"] = target["boxes"]
    return resized, new_target


@exercise(
    cases=_resize_cases,
    hint="scale = min(min_size / short side, max_size / long side); "
    "F.interpolate(image[None], scale_factor=scale, mode='bilinear', recompute_scale_factor=True, "
    "align_corners=False)[0]; masks: nearest on (G, 1, H, W) floats, back to uint8; boxes: "
    "resize_boxes from (H, W) to the new size; return (image, None) without a target, else a NEW dict "
    "(dict(target)) that keeps the other entries (labels).",
    steps=(
        "From the image's height and width, compute the scale with the min/max-size rule.",
        "Resize the image with F.interpolate: it wants a batch, so add a leading axis and take it away "
        "afterwards; bilinear, align_corners=False, recompute_scale_factor=True.",
        "With no target you are done: return the image and None.",
        "Make a shallow copy of the target dict, so the caller's stays as it was.",
        "Masks, if any: resize them by the same scale as one-channel floats (the default mode, nearest, "
        "and recompute_scale_factor=True), then drop the channel and go back to uint8.",
        "Boxes, if any: components.resize_boxes from the old (H, W) to the resized image's size.",
    ),
    mistakes=(
        Mistake("max_size was ignored: scale = min(min_size / short side, max_size / long side).", _without_max_size),
        Mistake(
            "without recompute_scale_factor=True, interpolate samples with the rounded-off scale: pass it.",
            _without_recompute,
        ),
        Mistake("the boxes were not rescaled with the image (use resize_boxes).", _boxes_not_rescaled),
    ),
    atol=1e-4,
    rtol=1e-5,
    torchvision_names=(f"{TRANSFORM}._resize_image_and_masks", f"{TRANSFORM}.GeneralizedRCNNTransform.resize"),
)
def check_resize(resize: Callable, extra: bool = False) -> None:
    """Check your resize(image, min_size, max_size, target=None) -> (image, target) against the reference."""


def _batch_cases() -> list[Case]:
    return [
        Case("one image, already a multiple of 32", ([_image(64, 96)], 32)),
        Case("two images of different sizes", ([_image(50, 70), _image(64, 40)], 32)),
        Case("odd sizes round up", ([_image(33, 65)], 32)),
        Case("a one-pixel image", ([_image(1, 1)], 32)),
        Case("float64 images: the batch keeps their dtype", ([_image(20, 30).double(), _image(8, 8).double()], 32)),
        Case("size_divisible 64", ([_image(70, 10), _image(20, 129)], 64), extra=True),
        Case("three images", ([_image(32, 32), _image(7, 90), _image(45, 3)], 32), extra=True),
        Case("float64 images, size_divisible 16", ([_image(17, 40).double(), _image(33, 9).double()], 16), extra=True),
    ]


def _images_bottom_right(images, size_divisible=32):
    batch = input_image.batch_images(images, size_divisible)
    moved = torch.zeros_like(batch)
    for i, img in enumerate(images):
        moved[i, :, batch.shape[2] - img.shape[1] :, batch.shape[3] - img.shape[2] :] = img
    return moved


@exercise(
    cases=_batch_cases,
    hint="the batch is Tensor[N, 3, Hp, Wp] of zeros, Hp = the largest height rounded UP to a multiple of "
    "size_divisible (math.ceil(h / d) * d), Wp likewise; copy each image into the top-left corner.",
    steps=(
        "Find the largest height and the largest width over the images.",
        "Round each up to the next multiple of size_divisible (math.ceil of the quotient).",
        "Make an all-zero batch of shape (N, 3, Hp, Wp) with Tensor.new_zeros on the first image: it "
        "keeps the images' dtype and device.",
        "Copy each image into the top-left corner of its slot, slicing with its own height and width.",
    ),
    mistakes=(
        Mistake(
            "the sides were not rounded up to a multiple of size_divisible.",
            lambda images, size_divisible=32: input_image.batch_images(images, 1),
        ),
        Mistake(
            "each image goes in the top-left corner (the padding is at the bottom and right, so the boxes "
            "keep their coordinates).",
            _images_bottom_right,
        ),
        Mistake(
            "the batch has the images' dtype and device: make it from an image (images[0].new_zeros(...)), "
            "not with torch.zeros, which makes float32 on the CPU.",
            lambda images, size_divisible=32: input_image.batch_images(images, size_divisible).float(),
        ),
    ),
    atol=0.0,
    rtol=0.0,
    torchvision_names=(f"{TRANSFORM}.GeneralizedRCNNTransform.batch_images",),
)
def check_batch_images(batch_images: Callable, extra: bool = False) -> None:
    """Check your batch_images(images, size_divisible=32) -> Tensor[N, 3, Hp, Wp] against the reference."""
