"""Stage 6, the mask head: a small FCN turns 14x14 RoI features into 28x28 masks, one per class.

Shapes:
    K        RoIs: positive sampled proposals in training, detections at test time
    C        classes (background included);  M = 28, the mask side
    G        ground-truth objects in an image;  H, W the image size

For N detections: Nx256x14x14 -> four 3x3 convs (256) -> 2x transposed conv -> Nx256x28x28 ->
1x1 conv -> NxCx28x28 logits. At test time the channel of the predicted class is kept, turned into
a probability and pasted into the image at its box: N x 1 x H x W.

Why one mask per class (Mask R-CNN, section 3): the mask loss only looks at the ground-truth class's
channel, so classes do not compete for pixels; the box head alone decides the class. Masks and
classes are decoupled.

Gotcha when pasting (torchvision's rule, kept for an exact match): the 28x28 mask is padded to 30x30
and its box grown by 30/28, so that the mask's border pixels have room to fade out; box corners are
truncated to integers and the box is one pixel wider than x2 - x1. Pasted masks are probabilities:
threshold them yourself (0.5 is usual).

Left out: mask scoring, class-agnostic masks, point-based refinement (PointRend).
"""

import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components

MASK_THRESHOLD = 0.5  # a pasted mask's pixel is "on" above this probability (as in COCO evaluation; the model
# itself returns probabilities, as torchvision's does, and never thresholds)

MASK_PADDING = 1  # pixels of zeros around a 28x28 mask before pasting (30x30)
# Bytes of float masks pasted at once: 100 detections on a 4000 x 4000 photo would take 6.4 GB as float32
# probabilities, so above this the masks are pasted in chunks and kept as bool (probability > MASK_THRESHOLD).
PASTE_MEMORY_LIMIT = 2**29


def maskrcnn_heads(head: "MaskRCNNHeads", features: Tensor) -> Tensor:
    """The mask head's convolutions (Mask R-CNN, Fig. 4 right): each 3x3 convolution in turn, each followed
    by a ReLU. Their padding of 1 keeps the 14x14 grid, so every output pixel still belongs to its RoI's cell.

    Args:
        head: head.convs, its 3x3 convolutions in order (four in R-50, 256 -> 256 channels)
        features (Tensor[K, C_fpn, 14, 14]): the RoIs' pooled features; K may be 0
    Returns:
        Tensor[K, D, 14, 14], D the last convolution's output channels
    """
    for conv in head.convs:
        features = F.relu(conv(features))  # (K, D_i, 14, 14)
    return features


class MaskRCNNHeads(nn.Sequential):
    """Four 3x3 convolutions, each with a ReLU, keeping 14x14 (Mask R-CNN, Fig. 4 right); the forward pass
    is maskrcnn_heads."""

    def __init__(self, in_channels: int, layers: tuple[int, ...]):
        # Each convolution in a Sequential of its own, so that keys read "0.0.weight" as torchvision's (whose
        # blocks also hold the ReLU, which has no weights: here maskrcnn_heads applies it).
        blocks = []
        for width in layers:
            blocks.append(nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1)))
            in_channels = width
        super().__init__(*blocks)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:  # every convolution here has one
                    nn.init.zeros_(layer.bias)

    @property
    def convs(self) -> list[nn.Module]:
        """The 3x3 convolutions (nn.Conv2d), in order."""
        return [block[0] for block in self.children() if isinstance(block, nn.Sequential)]

    def forward(self, features: Tensor) -> Tensor:
        """Tensor[K, C_fpn, 14, 14] -> Tensor[K, layers[-1], 14, 14], in channels-last memory order.

        Channels-last (each pixel's channels side by side) is the layout oneDNN's CPU convolutions work in:
        on K x 64 x 14 x 14 RoIs it makes this head, and the predictor's transposed convolution above all,
        faster than the default layout, for the same numbers up to rounding (benchmarks/TUNING.md, "What
        made the step cheaper"). The layout is set here, so maskrcnn_heads need not know about it.
        """
        return components.maskrcnn_heads(self, features.contiguous(memory_format=torch.channels_last))


def maskrcnn_predictor(predictor: "MaskRCNNPredictor", x: Tensor) -> Tensor:
    """Mask logits: the transposed convolution doubles the grid (kernel 2, stride 2: each input pixel becomes
    a 2x2 patch of its own, 14x14 -> 28x28), a ReLU, then the 1x1 convolution gives one logit map per class.

    Args:
        predictor: holds conv5_mask (ConvTranspose2d, D -> D') and mask_fcn_logits (Conv2d 1x1, D' -> C)
        x (Tensor[K, D, 14, 14])
    Returns:
        Tensor[K, C, 28, 28]: logits, no sigmoid (the loss takes logits; detection turns only the detected
        class's map into probabilities)
    """
    return predictor.mask_fcn_logits(F.relu(predictor.conv5_mask(x)))  # (K, D', 28, 28) -> (K, C, 28, 28)


class MaskRCNNPredictor(nn.Sequential):
    """2x upsampling (transposed conv) and a ReLU, then a 1x1 conv to one mask logit map per class; the forward
    pass is maskrcnn_predictor."""

    conv5_mask: nn.ConvTranspose2d  # the layers, by name (made in __init__), for type checkers
    mask_fcn_logits: nn.Conv2d

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        # torchvision's names, so the keys read conv5_mask.weight, mask_fcn_logits.weight (its ReLU between
        # them has no weights: here maskrcnn_predictor applies it)
        super().__init__(
            OrderedDict(
                [
                    ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)),  # 14x14 -> 28x28
                    ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)),
                ]
            )
        )
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[K, D, 14, 14] -> Tensor[K, C, 28, 28] mask logits."""
        return components.maskrcnn_predictor(self, x)


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, M: int) -> Tensor:
    """Mask targets: each RoI's ground-truth mask, cropped to the RoI and resized to M x M.

    Args:
        gt_masks (Tensor[G, H, W] uint8): the image's object masks
        boxes (Tensor[K, 4]): the RoIs, in image pixels
        matched_idxs (Tensor[K] int64): which object each RoI is matched to
        M: output side (28)
    Returns:
        Tensor[K, M, M] float in [0, 1]: RoI Align of the matched mask (adaptive sampling, aligned=False)
    """
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)  # (K, 5): (mask index, box)
    return components.roi_align(gt_masks[:, None].to(rois), rois, (M, M), 1.0, -1, False)[:, 0]


def mask_targets(
    side: int, proposals: list[Tensor], gt_masks: list[Tensor], gt_labels: list[Tensor], mask_matched_idxs: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Each positive RoI's class (Tensor[K] int64) and its object's mask projected into it (Tensor[K, side, side],
    values in [0, 1]), over the images in order: what a mask loss compares the logits with."""
    labels = torch.cat([lbl[idx] for lbl, idx in zip(gt_labels, mask_matched_idxs)])  # (K,)
    targets = torch.cat(
        [components.project_masks_on_boxes(m, p, i, side) for m, p, i in zip(gt_masks, proposals, mask_matched_idxs)]
    )  # (K, M, M)
    return labels, targets


def maskrcnn_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    mask_matched_idxs: list[Tensor],
) -> Tensor:
    """Mean binary cross-entropy between the ground-truth class's mask logits and the mask targets.

    Args:
        mask_logits (Tensor[K, C, M, M]); proposals: N Tensor[K_i, 4] (positives only)
        gt_masks: N Tensor[G_i, H, W]; gt_labels: N Tensor[G_i]; mask_matched_idxs: N Tensor[K_i]
    Returns:
        a scalar; 0 (still connected to the graph) when there is no positive RoI
    """
    labels, targets = mask_targets(mask_logits.shape[-1], proposals, gt_masks, gt_labels, mask_matched_idxs)
    if targets.numel() == 0:
        return mask_logits.sum() * 0  # BCE's mean of nothing is NaN
    own_class = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]  # (K, M, M)
    return F.binary_cross_entropy_with_logits(own_class, targets)


def select_class_masks(mask_logits: Tensor, labels: list[Tensor]) -> list[Tensor]:
    """Probabilities of each detection's own class: Tensor[K, C, M, M] -> N Tensor[T_i, 1, M, M]."""
    all_labels = torch.cat(labels)
    probs = mask_logits[torch.arange(len(all_labels), device=all_labels.device), all_labels].sigmoid()  # (K, M, M)
    return list(probs[:, None].split([len(l) for l in labels]))


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = MASK_PADDING
) -> Tensor:
    """Resize each M x M mask to its box and place it in an empty image.

    Args:
        masks (Tensor[T, 1, M, M]): probabilities; boxes (Tensor[T, 4]) in the output image's pixels
        img_shape: (H, W) of the output image
    Returns:
        Tensor[T, 1, H, W]: zero outside each box
    """
    height, width = img_shape
    side = masks.shape[-1]
    scale = (side + 2 * padding) / side
    masks = F.pad(masks, (padding,) * 4)  # (T, 1, M + 2p, M + 2p)
    # grow each box by the same factor around its centre, then truncate to whole pixels
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    ctr_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    ctr_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack([ctr_x - half_w, ctr_y - half_h, ctr_x + half_w, ctr_y + half_h], dim=1).to(torch.int64)
    pasted = masks.new_zeros((len(masks), 1, height, width))
    for i, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, grown.tolist())):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)  # +1: the box includes its last pixel
        resized = F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x0, x_end, y0, y_end = max(x1, 0), min(x2 + 1, width), max(y1, 0), min(y2 + 1, height)
        if x_end > x0 and y_end > y0:
            pasted[i, 0, y0:y_end, x0:x_end] = resized[y0 - y1 : y_end - y1, x0 - x1 : x_end - x1]
    return pasted


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
