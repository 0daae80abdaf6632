"""The model's input check: every image and target is checked before stage 1 runs.

A mistake in the input (a uint8 image, boxes as (x, y, w, h) or outside their image, masks saved as 0/255, a
label past the model's classes) would otherwise surface deep inside a stage as an IndexError or a NaN loss,
or worse train on with a loss many times too big; here it is refused with a ValueError that names the
image or target at fault and says how to fix it. Each check is vectorized (no Python loop over pixels or
objects): every training step runs them.

Shapes:
    N        images in a batch;  H, W an image's size
    G        ground-truth objects in an image

The dtype rule: the model runs in the dtype of its weights. A floating-point image of another dtype
(float16, bfloat16, float64 for a float32 model; float32 for a model after .double()) is converted to
the weights' dtype, and so are the targets' boxes; integer images (uint8 pixels) are refused with how
to scale them to [0, 1].
"""

from collections.abc import Mapping

import torch
from torch import Tensor

# Images are floats in [0, 1]. Bicubic resampling overshoots that range near sharp edges (by up to about a
# tenth); pixels in 0-255, or already normalized (about -2 to 2.6), miss it by far.
PIXEL_TOLERANCE = 0.25

# What each field of a training target holds (G objects in an image of H x W pixels)
TARGET_FIELDS = {
    "boxes": "float Tensor[G, 4] (x1, y1, x2, y2) in pixels",
    "labels": "int64 Tensor[G] of class ids from 1",
    "masks": "Tensor[G, H, W] of 0 and 1",
}


def check_images_and_targets(
    images: list[Tensor],
    targets: list[dict[str, Tensor]] | None = None,
    training: bool = False,
    num_classes: int | None = None,
    max_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[Tensor], list[dict[str, Tensor]] | None]:
    """Raise a ValueError that names the image or target at fault and how to fix it, before anything runs.

    Args:
        images: N Tensor[3, H_i, W_i], floats in [0, 1]
        targets: N dicts, boxes Tensor[G_i, 4], labels int64 Tensor[G_i] in 1..num_classes - 1,
            masks Tensor[G_i, H_i, W_i] of 0 and 1 (uint8, bool or float; each covers its whole image)
        num_classes: the model's, background included (labels are checked against it when given)
        max_size: the model's longest resized side (an image too thin to resize is refused when given)
        dtype: the model's weights' dtype
    Returns:
        the images and the targets, images and boxes converted to `dtype` if they have another
        floating-point dtype (the first convolution needs its input in its weights' dtype, and boxes
        rescaled in a lower precision would lose digits the model keeps)
    """
    if isinstance(images, Tensor):
        raise ValueError(
            f"images must be a list of Tensor[3, H, W], got one tensor of shape {tuple(images.shape)}: "
            "pass [image] for one image, or list(batch) for a batch"
        )
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one Tensor[3, H, W]")
    images = [check_image(i, image, max_size, dtype) for i, image in enumerate(images)]
    if training and targets is None:
        raise ValueError("in training mode the model needs targets: a list of dicts with boxes, labels and masks")
    if targets is None:
        return images, None
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets: give one target dict per image")
    for i, (image, target) in enumerate(zip(images, targets)):
        check_target(i, target, (int(image.shape[-2]), int(image.shape[-1])), num_classes)
    return images, [{**target, "boxes": target["boxes"].to(dtype)} for target in targets]


def check_image(i: int, image: Tensor, max_size: int | None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Image `i` of a batch, checked (see check_images_and_targets), as Tensor[3, H, W] of `dtype`."""
    if not isinstance(image, Tensor):
        raise ValueError(
            f"image {i} is a {type(image).__name__}, not a tensor: convert it with "
            "mrcnn_course.training.images.to_image_tensor"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        hint = " (channels last? use image.permute(2, 0, 1))" if image.dim() == 3 and image.shape[-1] == 3 else ""
        raise ValueError(f"image {i} has shape {tuple(image.shape)}: expected Tensor[3, H, W]{hint}")
    if not image.is_floating_point():
        raise ValueError(
            f"image {i} has dtype {image.dtype}: expected floats in [0, 1] (for uint8 pixels use image.float() / 255)"
        )
    height, width = image.shape[1:]
    if height < 1 or width < 1:
        raise ValueError(f"image {i} has shape {tuple(image.shape)}: height and width must be at least 1")
    image = image.to(dtype)  # the weights' dtype: the first convolution needs both the same
    bad = ~torch.isfinite(image)
    if bad.any():
        channel, row, column = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"image {i} has {int(bad.sum())} NaN or infinite values (the first at channel {channel}, row {row}, "
            f"column {column}): fix how it was made (a division by zero?), or replace them, e.g. "
            "image.nan_to_num(0).clamp(0, 1)"
        )
    low, high = image.aminmax()
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        hint = (
            "divide 0-255 values by 255"
            if high > 1 + PIXEL_TOLERANCE and low >= -PIXEL_TOLERANCE
            else "pass the pixels themselves: the model normalizes them (ImageNet mean and std) itself"
        )
        raise ValueError(f"image {i} spans [{low:.3g}, {high:.3g}]: expected floats in [0, 1]; {hint}")
    # the resize rule scales the long side down to max_size: a side thinner than long / max_size would vanish
    if max_size is not None and min(height, width) * max_size < max(height, width):
        raise ValueError(
            f"image {i} is {height} x {width} (height x width): resized so its long side is at most {max_size}, "
            f"its short side would be 0 pixels; crop it (or pad its short side) to an aspect ratio under {max_size}:1"
        )
    return image


def check_target(i: int, target: dict[str, Tensor], image_size: tuple[int, int], num_classes: int | None) -> None:
    """Target `i` of a batch against its image's size (H, W); see check_images_and_targets."""
    if not isinstance(target, Mapping):
        raise ValueError(
            f"target {i} is a {type(target).__name__}: each target is a dict of boxes, labels and masks tensors"
        )
    for key in TARGET_FIELDS:
        if key not in target:
            raise ValueError(f"target {i} has no '{key}': each target needs boxes, labels and masks")
        if not isinstance(target[key], Tensor):
            raise ValueError(
                f"target {i} {key} are a {type(target[key]).__name__}, not a tensor: expected {TARGET_FIELDS[key]} "
                "(convert them with torch.as_tensor)"
            )
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"target {i} boxes have shape {tuple(boxes.shape)}: expected Tensor[G, 4] (x1, y1, x2, y2)")
    if not boxes.is_floating_point():
        raise ValueError(f"target {i} boxes have dtype {boxes.dtype}: expected float")
    if labels.dtype != torch.int64:
        raise ValueError(f"target {i} labels have dtype {labels.dtype}: expected int64")
    count = len(boxes)
    if labels.dim() != 1:
        raise ValueError(
            f"target {i} labels have shape {tuple(labels.shape)}: expected Tensor[G], one label per box "
            "(labels.flatten() if each sits in a list of its own)"
        )
    if len(labels) != count:
        raise ValueError(f"target {i} has {len(labels)} labels for {count} boxes: give one label per box")
    if masks.dim() != 3 or len(masks) != count:
        raise ValueError(
            f"target {i} masks have shape {tuple(masks.shape)} for {count} boxes: expected Tensor[G, H, W], "
            "one mask per box"
        )
    if tuple(masks.shape[1:]) != image_size:
        raise ValueError(
            f"target {i} masks are {masks.shape[1]} x {masks.shape[2]} but image {i} is {image_size[0]} x "
            f"{image_size[1]}: each mask covers its whole image (resize the masks with the image, nearest)"
        )
    check_mask_values(i, masks)
    for j in torch.where(~torch.isfinite(boxes).all(dim=1))[0].tolist():
        raise ValueError(f"target {i} box {j} is {boxes[j].tolist()}: box coordinates must be finite numbers")
    for j in torch.where((boxes[:, 2:] <= boxes[:, :2]).any(dim=1))[0].tolist():
        raise ValueError(
            f"target {i} box {j} is {boxes[j].tolist()}: boxes need x2 > x1 and y2 > y1 "
            "(are they (x, y, w, h)? convert to (x1, y1, x2, y2); drop objects with zero area)"
        )
    # a box partly outside its image is an object cut by the frame; one wholly outside has nothing to learn
    # from, and its regression targets run to the size of the image (a box loss many times too big)
    height, width = image_size
    outside = (boxes[:, 0] >= width) | (boxes[:, 1] >= height) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    for j in torch.where(outside)[0].tolist():
        raise ValueError(
            f"target {i} box {j} is {boxes[j].tolist()} but image {i} is {height} x {width} (height x width): the "
            "box lies wholly outside it; boxes are (x1, y1, x2, y2) in this image's pixels (made for another size? "
            "resize the boxes with the image; or drop the object)"
        )
    for j in torch.where(labels < 1)[0].tolist():
        raise ValueError(
            f"target {i} object {j} has label {int(labels[j])}: labels start at 1 (0 is the background, never "
            "an object's label): shift your class ids up by one, or drop the object"
        )
    if num_classes is not None:
        for j in torch.where(labels >= num_classes)[0].tolist():
            raise ValueError(
                f"target {i} object {j} has label {int(labels[j])} but the model has {num_classes} classes "
                f"(labels 1 to {num_classes - 1}, 0 is the background): build the model with "
                f"num_classes={int(labels.max()) + 1}, or fix the label"
            )


def check_mask_values(i: int, masks: Tensor) -> None:
    """Refuse masks of target `i`, Tensor[G, H, W], that hold anything but 0 and 1, naming the first value at fault.

    The mask loss compares each mask's values with probabilities: a mask saved as 0/255 (as most image tools
    save them) trains with a mask loss many times too big, and nothing else fails.
    """
    if masks.dtype == torch.bool or masks.numel() == 0:
        return
    if not masks.is_floating_point():  # an integer in [0, 1] is 0 or 1: one pass over the masks
        low, high = masks.aminmax()
        if low >= 0 and high <= 1:
            return
    not_binary = (masks != 0) & (masks != 1)  # a float can also be 0.5 (a mask resized bilinearly) or NaN
    if not not_binary.any():
        return
    j, row, column = (int(v) for v in not_binary.nonzero()[0])
    where = f"the first in mask {j} at row {row}, column {column}"
    lowest, highest = (float(v) for v in masks[not_binary].aminmax())  # NaN if any is NaN: no test below holds
    if highest > 1:
        fix = "divide by 255 (or use mask > 0)" if highest == 255 else "use mask > 0 (1 where the object is)"
        raise ValueError(f"target {i}: masks hold 0 and 1; these hold values up to {highest:g} ({where}): {fix}")
    if lowest < 0:
        raise ValueError(
            f"target {i}: masks hold 0 and 1; these hold negative values, down to {lowest:g} ({where}): "
            "use mask > 0 (1 where the object is)"
        )
    raise ValueError(
        f"target {i}: masks hold 0 and 1; these hold {float(masks[j, row, column]):g} ({where}): use mask > 0.5 "
        "(a mask resized bilinearly? resize masks with mode='nearest')"
    )
