"""The exercises of stage 6, the mask head (lesson 06): the head's forward (maskrcnn_heads, maskrcnn_predictor),
project_masks_on_boxes, maskrcnn_loss, paste_masks_in_image."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_maskrcnn_heads",
    "check_maskrcnn_predictor",
    "check_project_masks_on_boxes",
    "check_maskrcnn_loss",
    "check_paste_masks_in_image",
]

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_course.model import components, mask_head, roi_align
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake

ROI_HEADS = "torchvision.models.detection.roi_heads"


MASK_RCNN = "torchvision.models.detection.mask_rcnn"


def _random_biases(module: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Random biases (they start at zero), in `dtype`: a ReLU forgotten after a convolution then shows."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.bias is not None:
            layer.bias.data.normal_(0, 0.5)
    return module.to(dtype)


def _heads_case(
    name: str, in_channels: int, layers: tuple[int, ...], rois: int, side: int = 14, dtype=torch.float32, extra=False
) -> Case:
    head = _random_biases(mask_head.MaskRCNNHeads(in_channels, layers), dtype)
    note = f"MaskRCNNHeads: {len(layers)} 3x3 convolutions, {in_channels} -> {' -> '.join(map(str, layers))} channels"
    features = torch.randn(rois, in_channels, side, side, dtype=dtype)
    return Case(name, (head, features), notes={"head": note}, extra=extra)


def _heads_cases() -> list[Case]:
    return [
        _heads_case("four convolutions (as in R-50), 3 RoIs", 8, (8, 8, 8, 8), 3),
        _heads_case("two convolutions (the small model's), 5 RoIs", 6, (6, 6), 5),
        _heads_case("the channels change: 4 -> 8 -> 8", 4, (8, 8), 2),
        _heads_case("no RoIs: Tensor[0, C, 14, 14]", 8, (8, 8, 8, 8), 0),
        _heads_case("three convolutions, one RoI", 5, (7, 7, 7), 1, extra=True),
        _heads_case("float64, 6 RoIs", 4, (4, 4, 4, 4), 6, dtype=torch.float64, extra=True),
        _heads_case("a 7 x 7 grid: the convolutions keep any size", 6, (6, 6), 4, side=7, extra=True),
    ]


def _heads_with(head, features, *, relu=True, last_relu=True, relu_first=False, layers=None):
    """The head's forward with one usual mistake (the keywords say which)."""
    convs = head.convs[:layers]
    for index, conv in enumerate(convs):
        if relu_first:
            features = conv(F.relu(features))
            continue
        features = conv(features)
        if relu and (last_relu or index < len(convs) - 1):
            features = F.relu(features)
    return features


@exercise(
    cases=_heads_cases,
    hint="for conv in self.convs (every 3x3 convolution, in order): x = F.relu(conv(x)); a ReLU follows the last "
    "one too; return x, Tensor[K, D, 14, 14]. Don't call self(x) or super().forward: that is the forward you "
    "are writing.",
    steps=(
        "self.convs lists the head's 3x3 convolutions in order (the model's has four in R-50, two in the small "
        "model): loop over them, do not count them yourself.",
        "Each convolution, then a ReLU (F.relu) on its output; the next convolution takes that.",
        "Return what the last ReLU gave: Tensor[K, D, 14, 14], 14x14 kept by the padding of 1.",
    ),
    fast="one call of each convolution on all the RoIs at once: no Python loop over RoIs or pixels",
    mistakes=(
        Mistake(
            "a ReLU follows every convolution: without them the four convolutions are one linear map.",
            lambda head, x: _heads_with(head, x, relu=False),
        ),
        Mistake(
            "a ReLU follows the last convolution too (the predictor's transposed convolution comes after it).",
            lambda head, x: _heads_with(head, x, last_relu=False),
        ),
        Mistake(
            "run every convolution of self.convs, in order, not only the first.",
            lambda head, x: _heads_with(head, x, layers=1),
        ),
        Mistake(
            "the ReLU comes after each convolution (on its output), not before it (on its input).",
            lambda head, x: _heads_with(head, x, relu_first=True),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{MASK_RCNN}.MaskRCNNHeads",),
)
def check_maskrcnn_heads(maskrcnn_heads: Callable, extra: bool = False) -> None:
    """Check your MaskRCNNHeads' forward(self, features) -> Tensor[K, D, 14, 14] (the class or the function)."""


def _predictor_case(
    name: str, in_channels: int, dim_reduced: int, classes: int, rois: int, side=14, dtype=torch.float32, extra=False
) -> Case:
    predictor = _random_biases(mask_head.MaskRCNNPredictor(in_channels, dim_reduced, classes), dtype)
    note = (
        f"MaskRCNNPredictor: conv5_mask ConvTranspose2d {in_channels} -> {dim_reduced} (kernel 2, stride 2), "
        f"mask_fcn_logits Conv2d 1x1 {dim_reduced} -> {classes}"
    )
    x = torch.randn(rois, in_channels, side, side, dtype=dtype)
    return Case(name, (predictor, x), notes={"predictor": note}, extra=extra)


def _predictor_cases() -> list[Case]:
    return [
        _predictor_case("3 classes, 2 RoIs: 14x14 -> 28x28", 8, 8, 3, 2),
        _predictor_case("the channels change: 8 -> 6, 5 classes", 8, 6, 5, 3),
        _predictor_case("no RoIs: Tensor[0, C, 28, 28]", 8, 8, 4, 0),
        _predictor_case("a 7 x 7 input: the grid doubles, 14 x 14", 6, 6, 2, 2, side=7),
        _predictor_case("one RoI, 10 classes", 4, 6, 10, 1, extra=True),
        _predictor_case("float64, 4 RoIs", 6, 4, 3, 4, dtype=torch.float64, extra=True),
    ]


@exercise(
    cases=_predictor_cases,
    hint="x = F.relu(self.conv5_mask(x)) (the transposed convolution doubles 14x14 to 28x28); return "
    "self.mask_fcn_logits(x): one logit map per class, Tensor[K, C, 28, 28], with no sigmoid and no ReLU "
    "after it. Don't call self(x) or super().forward: that is the forward you are writing.",
    steps=(
        "self.conv5_mask, the transposed convolution (kernel 2, stride 2), turns each pixel into a 2x2 patch: "
        "14x14 becomes 28x28.",
        "A ReLU on its output.",
        "self.mask_fcn_logits, the 1x1 convolution, gives one map per class. Return it as it is: logits.",
    ),
    fast="one call of each convolution on all the RoIs at once: no Python loop over RoIs or classes",
    mistakes=(
        Mistake(
            "a ReLU follows the transposed convolution (conv5_mask), before the 1x1.",
            lambda predictor, x: predictor.mask_fcn_logits(predictor.conv5_mask(x)),
        ),
        Mistake(
            "return the logits: no sigmoid (the loss applies it, binary_cross_entropy_with_logits; detection "
            "applies it to the detected class's map only).",
            lambda predictor, x: mask_head.maskrcnn_predictor(predictor, x).sigmoid(),
        ),
        Mistake(
            "no ReLU after the 1x1 convolution: a logit may be negative (a pixel outside the object).",
            lambda predictor, x: F.relu(mask_head.maskrcnn_predictor(predictor, x)),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{MASK_RCNN}.MaskRCNNPredictor",),
)
def check_maskrcnn_predictor(maskrcnn_predictor: Callable, extra: bool = False) -> None:
    """Check your MaskRCNNPredictor's forward(self, x) -> Tensor[K, C, 28, 28] logits (the class or the function)."""


def _objects(count: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random ellipses as masks (Tensor[G, H, W] uint8) and their boxes (Tensor[G, 4])."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centres = torch.rand(count, 2) * torch.tensor([width, height]) * 0.6 + torch.tensor([width, height]) * 0.2
    radii = torch.rand(count, 2) * torch.tensor([width, height]) * 0.2 + 2
    inside = ((x - centres[:, :1, None]) / radii[:, :1, None]) ** 2 + (
        (y - centres[:, 1:, None]) / radii[:, 1:, None]
    ) ** 2
    masks = (inside <= 1).to(torch.uint8)  # (G, H, W)
    boxes = torch.cat([centres - radii, centres + radii], dim=1).floor()
    return masks, boxes


def _rois_on(boxes: torch.Tensor, matched: torch.Tensor, jitter: float = 3.0) -> torch.Tensor:
    """RoIs near the matched objects' boxes (Tensor[K, 4]), as the RPN proposes them."""
    return boxes[matched] + torch.randn(len(matched), 4) * jitter


def _projection_case(
    name: str,
    count: int,
    size: tuple[int, int],
    matched: list[int],
    side: int = 28,
    jitter: float = 3.0,
    extra: bool = False,
) -> Case:
    masks, boxes = _objects(count, *size)
    matched_idxs = torch.tensor(matched, dtype=torch.int64)
    return Case(name, (masks, _rois_on(boxes, matched_idxs, jitter), matched_idxs, side), extra=extra)


def _projection_cases() -> list[Case]:
    masks, boxes = _objects(1, 40, 40)
    return [
        Case("one object, its own box", (masks, boxes, torch.tensor([0]), 28)),
        _projection_case("three objects, five RoIs (two on the same object)", 3, (48, 64), [0, 2, 1, 2, 0]),
        _projection_case("RoIs partly outside the image", 2, (32, 32), [0, 1, 1], jitter=12.0),
        Case("no RoIs", (masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 28)),
        _projection_case("14 x 14 targets", 2, (40, 40), [1, 0], side=14),
        _projection_case("a non-square image, 20 RoIs", 4, (50, 90), torch.randint(0, 4, (20,)).tolist(), extra=True),
        _projection_case("RoIs far larger than their objects", 2, (64, 64), [0, 1], jitter=20.0, extra=True),
        _projection_case("56 x 56 targets", 1, (40, 30), [0, 0], side=56, extra=True),
        _projection_case("four objects, three RoIs matched out of order", 4, (36, 60), [3, 1, 0], extra=True),
    ]


def _rois(boxes, matched_idxs):
    return torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)  # (K, 5): (mask index, box)


def _projected_with(gt_masks, boxes, matched_idxs, M, *, sampling_ratio=-1, aligned=False):
    return roi_align.roi_align(
        gt_masks[:, None].float(), _rois(boxes, matched_idxs), (M, M), 1.0, sampling_ratio, aligned
    )[:, 0]


def _whole_mask_resized(gt_masks, boxes, matched_idxs, M):
    return F.interpolate(gt_masks[matched_idxs][:, None].float(), size=(M, M), mode="bilinear")[:, 0]


@exercise(
    cases=_projection_cases,
    hint="each RoI reads its matched object's mask: rois = Tensor[K, 5] of (matched index, x1, y1, x2, y2); "
    "components.roi_align(gt_masks[:, None] as float (Tensor[G, 1, H, W]), rois, (M, M), 1.0, -1, False) "
    "crops and resizes every mask at once (spatial_scale 1: the masks are at image size; sampling_ratio "
    "-1: adaptive); drop the channel axis: Tensor[K, M, M].",
    steps=(
        "RoI Align's boxes, Tensor[K, 5]: in front of each box, the index of its matched object (it picks "
        "the 'image', here the mask, the box reads), in the boxes' dtype.",
        "Give the masks a channel axis and make them float.",
        "components.roi_align with an (M, M) output, scale 1, sampling ratio -1, not aligned.",
        "Drop the channel axis.",
    ),
    fast="one roi_align call on all the image's masks, not one call per box",
    mistakes=(
        Mistake(
            "mask targets use adaptive sampling (sampling_ratio -1, as torchvision), not 2.",
            lambda *args: _projected_with(*args, sampling_ratio=2),
        ),
        Mistake("aligned=False, as everywhere in the model.", lambda *args: _projected_with(*args, aligned=True)),
        Mistake(
            "each RoI reads the mask of ITS matched object (matched_idxs[k]), not mask k.",
            lambda masks, boxes, matched, M: _projected_with(masks, boxes, torch.arange(len(boxes)), M),
        ),
        Mistake("crop each mask to its RoI, then resize: the whole mask was resized.", _whole_mask_resized),
        Mistake(
            "return Tensor[K, M, M]: drop roi_align's channel axis ([:, 0]).",
            lambda *args: mask_head.project_masks_on_boxes(*args)[:, None],
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{ROI_HEADS}.project_masks_on_boxes",),
)
def check_project_masks_on_boxes(project_masks_on_boxes: Callable, extra: bool = False) -> None:
    """Check your project_masks_on_boxes(gt_masks, boxes, matched_idxs, M) -> Tensor[K, M, M]."""


def _loss_case(
    name: str, images: list[tuple[int, tuple[int, int], int]], num_classes: int, side: int = 28, extra: bool = False
) -> Case:
    """images: (objects, (H, W), positive RoIs) per image; random mask logits for every RoI and class."""
    proposals, gt_masks, gt_labels, matched = [], [], [], []
    for count, size, rois in images:
        masks, boxes = _objects(count, *size)
        idx = torch.randint(0, count, (rois,))
        proposals.append(_rois_on(boxes, idx))
        gt_masks.append(masks)
        gt_labels.append(torch.randint(1, num_classes, (count,)))
        matched.append(idx)
    logits = torch.randn(sum(len(p) for p in proposals), num_classes, side, side) * 2
    return Case(name, (logits, proposals, gt_masks, gt_labels, matched), extra=extra)


def _loss_cases() -> list[Case]:
    return [
        _loss_case("one image, 3 positive RoIs, 4 classes", [(2, (40, 40), 3)], 4),
        _loss_case("two images", [(3, (48, 64), 4), (1, (32, 32), 2)], 3),
        _loss_case("no positive RoI: the loss is 0", [(2, (40, 40), 0)], 3),
        _loss_case("14 x 14 masks", [(2, (32, 48), 3)], 5, side=14),
        _loss_case(
            "6 classes, 12 RoIs over 3 images", [(3, (40, 40), 5), (2, (64, 32), 4), (4, (48, 48), 3)], 6, extra=True
        ),
        _loss_case("one RoI", [(1, (30, 30), 1)], 2, extra=True),
    ]


def _loss_with(
    mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs, *, all_channels=False, twice=False, reduction="mean"
):
    """The mask loss with one usual mistake (the arguments say which)."""
    side = mask_logits.shape[-1]
    labels = torch.cat([lbl[idx] for lbl, idx in zip(gt_labels, mask_matched_idxs)])
    targets = torch.cat(
        [mask_head.project_masks_on_boxes(m, p, i, side) for m, p, i in zip(gt_masks, proposals, mask_matched_idxs)]
    )  # (K, M, M)
    if targets.numel() == 0:
        raise ValueError("no RoI: the mistakes do not show")
    if all_channels:
        return F.binary_cross_entropy_with_logits(mask_logits, targets[:, None].expand_as(mask_logits))
    own = mask_logits[torch.arange(len(labels)), labels]
    return F.binary_cross_entropy_with_logits(own.sigmoid() if twice else own, targets, reduction=reduction)


def _targets_from_whole_masks(*args):
    def whole(gt_masks, boxes, matched_idxs, M):
        return _whole_mask_resized(gt_masks, boxes, matched_idxs, M)

    with components.using(project_masks_on_boxes=whole):
        return mask_head.maskrcnn_loss(*args)


@exercise(
    cases=_loss_cases,
    hint="labels = each RoI's matched object's label (gt_labels[i][mask_matched_idxs[i]], concatenated); targets "
    "= components.project_masks_on_boxes(gt_masks[i], proposals[i], mask_matched_idxs[i], M) per image, "
    "concatenated (Tensor[K, M, M]); if there are none, return mask_logits.sum() * 0; else the logits of "
    "each RoI's OWN class, mask_logits[torch.arange(K), labels], and F.binary_cross_entropy_with_logits "
    "against the targets (a mean over every pixel of every RoI).",
    steps=(
        "Each RoI's class: index each image's labels with its matched indices; concatenate.",
        "Each image's targets from components.project_masks_on_boxes (M is the logits' last size); concatenate.",
        "With no targets, return a zero that keeps the graph.",
        "For each RoI, the logits of its own class: index the first two axes with torch.arange(K) and the classes.",
        "F.binary_cross_entropy_with_logits against the targets.",
    ),
    fast="gather every RoI's true-class channel with one indexing step, one BCE call for all RoIs",
    mistakes=(
        Mistake(
            "only the ground-truth class's channel is compared with the target: the other classes' masks get "
            "no loss (masks and classes are decoupled).",
            lambda *args: _loss_with(*args, all_channels=True),
        ),
        Mistake(
            "each RoI's class is the LABEL of its matched object, gt_labels[i][mask_matched_idxs[i]], not "
            "the object's index.",
            lambda logits, proposals, masks, labels, matched: mask_head.maskrcnn_loss(
                logits, proposals, masks, [torch.arange(len(l)) for l in labels], matched
            ),
        ),
        Mistake(
            "the targets are each object's mask cropped to the RoI (components.project_masks_on_boxes), not "
            "the whole mask resized.",
            _targets_from_whole_masks,
        ),
        Mistake(
            "binary_cross_entropy_with_logits takes the logits: apply no sigmoid before it.",
            lambda *args: _loss_with(*args, twice=True),
        ),
        Mistake(
            "the loss is the mean over every pixel of every RoI, not the sum.",
            lambda *args: _loss_with(*args, reduction="sum"),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{ROI_HEADS}.maskrcnn_loss",),
)
def check_maskrcnn_loss(maskrcnn_loss: Callable, extra: bool = False) -> None:
    """Check your maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs) -> a scalar."""


def _paste_case(
    name: str, boxes: list[list[float]], size: tuple[int, int], side: int = 28, *padding: int, extra: bool = False
) -> Case:
    box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return Case(name, (torch.rand(len(box_tensor), 1, side, side), box_tensor, size, *padding), extra=extra)


def _paste_cases() -> list[Case]:
    return [
        _paste_case("one mask in the middle", [[10.0, 12.0, 30.0, 28.0]], (40, 40)),
        _paste_case(
            "three masks of different sizes", [[2.0, 3, 12, 9], [5.5, 6.25, 38.7, 30.1], [20, 20, 21.5, 25]], (40, 48)
        ),
        _paste_case(
            "boxes partly outside the image", [[-5.0, 10, 15, 30], [30, -4, 50, 12], [35, 35, 60, 70]], (40, 48)
        ),
        _paste_case("no masks", [], (32, 24)),
        _paste_case("a non-square image: img_shape is (H, W)", [[4.0, 2, 40, 18]], (24, 56)),
        _paste_case("a box of less than a pixel", [[10.2, 10.4, 10.6, 10.7]], (20, 20), extra=True),
        _paste_case("14 x 14 masks", [[1.0, 1, 17, 13], [8, 3, 12, 19]], (20, 20), 14, extra=True),
        _paste_case("padding 2", [[3.0, 4, 25, 20]], (30, 30), 28, 2, extra=True),
        _paste_case("a wide image, two masks", [[30.0, 2, 70, 20], [5.5, 10.25, 20, 26]], (28, 80), extra=True),
    ]


@exercise(
    cases=_paste_cases,
    hint="pad each M x M mask with `padding` zeros (F.pad) and grow its box about the centre by (M + 2 * padding) "
    "/ M; truncate the grown corners to integers (.to(torch.int64)); per mask: w = x2 - x1 + 1, h = y2 - y1 "
    "+ 1 (at least 1), F.interpolate(mask[None], size=(h, w), mode='bilinear', align_corners=False), then "
    "copy the part inside the image to [y1:y2 + 1, x1:x2 + 1] of a zero Tensor[T, 1, H, W]; img_shape is "
    "(H, W).",
    steps=(
        "Pad the masks (F.pad) and work out the growth factor.",
        "Grow every box: the same centre, half-width and half-height times the factor; integer corners.",
        "Start from an all-zero output.",
        "For each mask: its box's width and height in whole pixels, counting the last one; resize the "
        "mask to that size (F.interpolate).",
        "Intersect the box with the image; if anything is left, copy the matching part of the resized "
        "mask there (offset by the box's corner).",
    ),
    mistakes=(
        Mistake(
            "pad the mask with `padding` zeros and grow the box by (M + 2 * padding) / M before pasting: the "
            "mask's edge needs room to fade out.",
            lambda masks, boxes, shape, padding=1: mask_head.paste_masks_in_image(masks, boxes, shape, 0),
        ),
        Mistake(
            "img_shape is (H, W): the output is Tensor[T, 1, H, W].",
            lambda masks, boxes, shape, *padding: mask_head.paste_masks_in_image(masks, boxes, shape[::-1], *padding),
        ),
        Mistake(
            "the grown box's corners are truncated to integers (.to(torch.int64)), not rounded.",
            lambda masks, boxes, shape, *padding: mask_head.paste_masks_in_image(masks, boxes + 0.5, shape, *padding),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{ROI_HEADS}.paste_masks_in_image", f"{ROI_HEADS}.paste_mask_in_image"),
)
def check_paste_masks_in_image(paste_masks_in_image: Callable, extra: bool = False) -> None:
    """Check your paste_masks_in_image(masks, boxes, img_shape, padding) -> Tensor[T, 1, H, W]."""
