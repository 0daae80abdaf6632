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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components

# ImageNet statistics: the backbone's first layer expects inputs normalized this way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    def as_float(size: int) -> Tensor:  # float32 whatever the boxes' dtype, as torchvision: the same ratios
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
        target["boxes"] = components.resize_boxes(target["boxes"], (height, width), (image.shape[-2], image.shape[-1]))
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
        resized_images: list[Tensor] = []
        resized_targets: list[dict[str, Tensor]] = []
        for i, image in enumerate(images):
            if self.training:
                # One uniform draw per image, like torchvision's torch_choice (keeps seeded runs equal).
                size = self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]
            else:
                size = self.min_size[-1]
            target = targets[i] if targets is not None else None
            image, target = components.resize(self.normalize(image), size, self.max_size, target)
            resized_images.append(image)
            if target is not None:
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
        """Map each image's boxes back to its original size (the mask head pastes the masks there)."""
        for detection, size, original_size in zip(detections, image_sizes, original_image_sizes):
            detection["boxes"] = components.resize_boxes(detection["boxes"], size, original_size)
        return detections
