"""Stage 1, the input image: normalize, resize, batch with padding, and map outputs back.

Shapes:
    N        images in a batch
    H, W     an image's own size; H', W' after resizing; Hp, Wp the padded batch size
    G        ground-truth objects in an image

For an 800x800 photo and the R-50-FPN configuration: 1 image, 3x800x800 float in [0, 1] in,
1x3x800x800 normalized and padded out (800 is already a multiple of 32).

Order matters for an exact match with torchvision: normalize first, then resize, then pad with
zeros, so the padding is the mean colour, not black.

Left out: fixed-size resizing, keypoints, ONNX/TorchScript variants.
"""

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.mask_head import MASK_THRESHOLD

# ImageNet statistics: the backbone's first layer expects inputs normalized this way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Images are floats in [0, 1]. Bicubic resampling overshoots that range near sharp edges (by up to about a
# tenth); pixels in 0-255, or already normalized (about -2 to 2.6), miss it by far.
PIXEL_TOLERANCE = 0.25
# Bytes of float masks pasted at once: 100 detections on a 4000 x 4000 photo would take 6.4 GB as float32
# probabilities, so above this the masks are pasted in chunks and kept as bool (probability > MASK_THRESHOLD).
PASTE_MEMORY_LIMIT = 2**29


@dataclass
class ImageList:
    """A padded batch and the size of each image inside it before padding.

    tensors: Tensor[N, 3, Hp, Wp]; image_sizes: [(H'_i, W'_i)], the resized, unpadded sizes.
    """

    tensors: Tensor
    image_sizes: list[tuple[int, int]]


def resize_boxes(boxes: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Rescale boxes (Tensor[G, 4]) from an image of original_size (h, w) to one of new_size (h, w).

    x is scaled by the width ratio and y by the height ratio: they differ slightly after rounding.
    """

    def as_float(size: int) -> Tensor:  # float32, as torchvision
        return torch.tensor(size, dtype=torch.float32, device=boxes.device)

    ratio_h = as_float(new_size[0]) / as_float(original_size[0])
    ratio_w = as_float(new_size[1]) / as_float(original_size[1])
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


def resize(
    image: Tensor, min_size: int, max_size: int, target: dict[str, Tensor] | None = None
) -> tuple[Tensor, dict[str, Tensor] | None]:
    """Resize so the short side is min_size, unless that makes the long side exceed max_size.

    Args:
        image (Tensor[3, H, W]): normalized image
        min_size, max_size: scale = min(min_size / short side, max_size / long side)
        target: optional dict with "boxes" (Tensor[G, 4]) and "masks" (Tensor[G, H, W] uint8)
    Returns:
        the image (Tensor[3, H', W']) and a new target dict with boxes and masks rescaled

    Gotcha: torchvision passes the scale factor to interpolate with recompute_scale_factor=True, so
    the output size is floor(H * scale) and the sampling uses the ratio of the sizes, not the scale.
    Leaving it out moves pixel values by up to 1.75.
    """
    height, width = image.shape[-2:]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    image = F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    if target is None:
        return image, None
    target = dict(target)
    if "masks" in target:
        masks = target["masks"][:, None].float()  # (G, 1, H, W): interpolate wants a channel axis
        masks = F.interpolate(masks, scale_factor=scale, recompute_scale_factor=True)  # nearest
        target["masks"] = masks[:, 0].byte()
    if "boxes" in target:
        target["boxes"] = components.resize_boxes(target["boxes"], (height, width), tuple(image.shape[-2:]))
    return image, target


def batch_images(images: list[Tensor], size_divisible: int = 32) -> Tensor:
    """Stack images of different sizes into one zero-padded batch.

    Args:
        images: N tensors Tensor[3, H_i, W_i]
        size_divisible: the padded height and width are rounded up to a multiple of this, so that
            every FPN level (stride up to 32) divides the image evenly
    Returns:
        Tensor[N, 3, Hp, Wp], each image in the top-left corner, zeros below and to the right
    """
    channels = max(img.shape[0] for img in images)
    height = math.ceil(max(img.shape[1] for img in images) / size_divisible) * size_divisible
    width = math.ceil(max(img.shape[2] for img in images) / size_divisible) * size_divisible
    batch = images[0].new_zeros((len(images), channels, height, width))
    for i, img in enumerate(images):
        batch[i, : img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    return batch


class GeneralizedRCNNTransform(nn.Module):
    """Normalize, resize and batch the images (and their targets); map detections back afterwards.

    min_size may be a tuple: in training one is drawn at random per image (multi-scale training),
    with torch's generator, the same draw as torchvision's, so seeded runs match.
    """

    def __init__(
        self,
        min_size: int | tuple[int, ...],
        max_size: int,
        image_mean: tuple[float, ...] = IMAGENET_MEAN,
        image_std: tuple[float, ...] = IMAGENET_STD,
        size_divisible: int = 32,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.size_divisible = size_divisible

    def normalize(self, image: Tensor) -> Tensor:
        """Tensor[3, H, W] in [0, 1] -> zero mean, unit variance per channel (ImageNet statistics)."""
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        resized_images, resized_targets = [], []
        for i, image in enumerate(images):
            if self.training:
                # One uniform draw per image, like torchvision's torch_choice (keeps seeded runs equal).
                size = self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]
            else:
                size = self.min_size[-1]
            target = targets[i] if targets is not None else None
            image, target = components.resize(self.normalize(image), size, self.max_size, target)
            resized_images.append(image)
            resized_targets.append(target)
        image_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized_images]
        batch = components.batch_images(resized_images, self.size_divisible)
        return ImageList(batch, image_sizes), (resized_targets if targets is not None else None)

    def postprocess(
        self,
        detections: list[dict[str, Tensor]],
        image_sizes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map each image's boxes back to its original size and paste its masks at full size."""
        for detection, size, original_size in zip(detections, image_sizes, original_image_sizes):
            detection["boxes"] = components.resize_boxes(detection["boxes"], size, original_size)
            if "masks" in detection:
                detection["masks"] = paste_masks_within_memory(detection["masks"], detection["boxes"], original_size)
        return detections


def paste_masks_within_memory(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """components.paste_masks_in_image, bounded in memory: Tensor[T, 1, M, M] probabilities and boxes
    Tensor[T, 4] -> Tensor[T, 1, H, W], float probabilities while they fit in PASTE_MEMORY_LIMIT bytes;
    above it (many detections on a large photo) pasted a chunk at a time and kept as bool
    (probability > MASK_THRESHOLD, a quarter of the memory), with a warning that says so."""
    height, width = image_size
    bytes_per_mask = height * width * masks.element_size()
    if len(masks) * bytes_per_mask <= PASTE_MEMORY_LIMIT:
        return components.paste_masks_in_image(masks, boxes, image_size)
    warnings.warn(
        f"{len(masks)} masks of {height} x {width} as float probabilities would take "
        f"{len(masks) * bytes_per_mask / 1e9:.1f} GB: they are returned as bool masks (probability > "
        f"{MASK_THRESHOLD}); pass a smaller image, or lower box_detections_per_img, to get probabilities",
        stacklevel=2,
    )
    chunk = max(1, PASTE_MEMORY_LIMIT // bytes_per_mask)
    pasted = torch.zeros((len(masks), 1, height, width), dtype=torch.bool, device=masks.device)
    for start in range(0, len(masks), chunk):
        part = slice(start, start + chunk)
        pasted[part] = components.paste_masks_in_image(masks[part], boxes[part], image_size) > MASK_THRESHOLD
    return pasted


def check_images_and_targets(
    images: list[Tensor],
    targets: list[dict[str, Tensor]] | None = None,
    training: bool = False,
    num_classes: int | None = None,
    max_size: int | None = None,
) -> list[Tensor]:
    """Raise a ValueError that names the image or target at fault and how to fix it, before anything runs.

    Args:
        images: N Tensor[3, H_i, W_i], floats in [0, 1]
        targets: N dicts, boxes Tensor[G_i, 4], labels int64 Tensor[G_i] in 1..num_classes - 1,
            masks Tensor[G_i, H_i, W_i] (each covers its whole image)
        num_classes: the model's, background included (labels are checked against it when given)
        max_size: the model's longest resized side (an image too thin to resize is refused when given)
    Returns:
        the images, float16 and float64 ones converted to float32 (the model's weights are float32)
    """
    if isinstance(images, Tensor):
        raise ValueError(
            f"images must be a list of Tensor[3, H, W], got one tensor of shape {tuple(images.shape)}: "
            "pass [image] for one image, or list(batch) for a batch"
        )
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one Tensor[3, H, W]")
    images = [check_image(i, image, max_size) for i, image in enumerate(images)]
    if training and targets is None:
        raise ValueError("in training mode the model needs targets: a list of dicts with boxes, labels and masks")
    if targets is None:
        return images
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets: give one target dict per image")
    for i, (image, target) in enumerate(zip(images, targets)):
        check_target(i, target, (int(image.shape[-2]), int(image.shape[-1])), num_classes)
    return images


def check_image(i: int, image: Tensor, max_size: int | None) -> Tensor:
    """Image `i` of a batch, checked (see check_images_and_targets), as float32 Tensor[3, H, W]."""
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
    image = image.float()  # float16 and float64 would meet float32 weights in the first convolution
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
    for key in ("boxes", "labels", "masks"):
        if key not in target:
            raise ValueError(f"target {i} has no '{key}': each target needs boxes, labels and masks")
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
    for j in torch.where(~torch.isfinite(boxes).all(dim=1))[0].tolist():
        raise ValueError(f"target {i} box {j} is {boxes[j].tolist()}: box coordinates must be finite numbers")
    for j in torch.where((boxes[:, 2:] <= boxes[:, :2]).any(dim=1))[0].tolist():
        raise ValueError(
            f"target {i} box {j} is {boxes[j].tolist()}: boxes need x2 > x1 and y2 > y1 "
            "(are they (x, y, w, h)? convert to (x1, y1, x2, y2); drop objects with zero area)"
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
