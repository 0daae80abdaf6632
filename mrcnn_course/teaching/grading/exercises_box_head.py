"""The exercises of stage 5, the box head: fastrcnn_loss and postprocess_detections (lesson 05)."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_fastrcnn_loss",
    "check_postprocess_detections",
]

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mrcnn_course.model import box_head, components
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake

ROI_HEADS = "torchvision.models.detection.roi_heads"


def _sampled_rois(counts: list[int], num_classes: int, positives: float = 0.25, spread: float = 1.0) -> tuple:
    """Random head outputs for sampled RoIs: (class_logits, box_regression, labels, regression_targets),
    with about `positives` of each image's RoIs labelled with an object class; targets ~ N(0, spread)."""
    total = sum(counts)
    labels = [torch.where(torch.rand(n) < positives, torch.randint(1, num_classes, (n,)), 0) for n in counts]
    targets = [torch.randn(n, 4) * spread for n in counts]
    return torch.randn(total, num_classes), torch.randn(total, 4 * num_classes) * spread, labels, targets


def _fastrcnn_cases() -> list[Case]:
    few = _sampled_rois([6], 3, positives=0.5)
    return [
        Case("one image, 6 RoIs, 3 classes", few),
        Case("two images, 16 and 8 RoIs", _sampled_rois([16, 8], 4)),
        Case(
            "only background RoIs: no box loss",
            (*_sampled_rois([5], 3)[:2], [torch.zeros(5, dtype=torch.int64)], [torch.randn(5, 4)]),
        ),
        Case(
            "small residuals: smooth L1's quadratic part (|x| < 1/9)",
            _sampled_rois([12], 3, positives=0.5, spread=0.02),
        ),
        Case("every RoI positive", (*few[:2], [torch.tensor([1, 2, 1, 1, 2, 2])], few[3]), extra=True),
        Case("64 RoIs of 4 images, 6 classes", _sampled_rois([16] * 4, 6), extra=True),
        Case("one RoI", _sampled_rois([1], 2, positives=1.0), extra=True),
    ]


def _box_loss_with(
    class_logits,
    box_regression,
    labels,
    targets,
    *,
    beta=1 / 9,
    all_classes=False,
    with_background=False,
    divide_by="all",
):
    """The box loss with one usual mistake (the arguments say which), and the right classification loss.
    divide_by: "all" RoIs (right), the "positives", or the "entries" summed (a mean)."""
    labels, targets = torch.cat(labels), torch.cat(targets)
    deltas = box_regression.reshape(len(labels), -1, 4)  # (K, C, 4)
    chosen = torch.arange(len(labels)) if with_background else torch.where(labels > 0)[0]
    predicted = deltas[chosen] if all_classes else deltas[chosen, labels[chosen]]
    expected = targets[chosen][:, None].expand_as(predicted) if all_classes else targets[chosen]
    loss = F.smooth_l1_loss(predicted, expected, beta=beta, reduction="sum")
    count = {"all": len(labels), "positives": len(chosen), "entries": predicted.numel()}[divide_by]
    return F.cross_entropy(class_logits, labels), loss / max(count, 1)


@exercise(
    cases=_fastrcnn_cases,
    hint="concatenate the images' labels and targets; classification: F.cross_entropy(class_logits, labels) over "
    "all RoIs; box: only positive RoIs (label > 0), only their ground-truth class's 4 deltas "
    "(box_regression reshaped to (K, C, 4), indexed [positive, labels[positive]]), smooth L1 with beta 1/9, "
    "summed, divided by the number of ALL RoIs; return (classification_loss, box_loss).",
    steps=(
        "Concatenate the labels and the regression targets of all images.",
        "The cross-entropy of the class logits against the labels.",
        "Find the positive RoIs (torch.where).",
        "View the deltas as (K, C, 4) and pick, for each positive RoI, the 4 deltas of its own class "
        "(index with two index tensors at once).",
        "Smooth L1 against those RoIs' targets, beta 1/9, reduction 'sum', divided by K.",
    ),
    fast="select the true class's 4 deltas with indexing, one loss call for all RoIs",
    mistakes=(
        Mistake(
            "smooth L1 uses beta = 1/9 (torchvision's value), not the default 1.",
            lambda *args: _box_loss_with(*args, beta=1.0),
        ),
        Mistake(
            "only the ground-truth class's 4 deltas are compared with the targets: the other classes' boxes "
            "get no loss.",
            lambda *args: _box_loss_with(*args, all_classes=True),
        ),
        Mistake(
            "the box loss is summed and divided by ALL sampled RoIs (background counts as 0), not by the positives.",
            lambda *args: _box_loss_with(*args, divide_by="positives"),
        ),
        Mistake(
            "background RoIs (label 0) have no box to regress: take the box loss over positives only.",
            lambda *args: _box_loss_with(*args, with_background=True),
        ),
        Mistake(
            "sum, not mean: add up the positives' smooth L1 terms, then divide by the number of all RoIs.",
            lambda *args: _box_loss_with(*args, divide_by="entries"),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(f"{ROI_HEADS}.fastrcnn_loss",),
)
def check_fastrcnn_loss(fastrcnn_loss: Callable, extra: bool = False) -> None:
    """Check your fastrcnn_loss(class_logits, box_regression, labels, regression_targets) -> (Tensor, Tensor)."""


def _proposals(count: int, height: int, width: int) -> torch.Tensor:
    corners = torch.rand(count, 2) * torch.tensor([width, height]) * 0.8
    return torch.cat([corners, corners + torch.rand(count, 2) * torch.tensor([width, height]) * 0.4 + 2], dim=1)


def _detection_case(
    name: str,
    sizes: list[tuple[int, int]],
    per_image: int | list[int],
    num_classes: int,
    *settings,
    confident: float = 3.0,
    spread: float = 1.0,
    extra: bool = False,
) -> Case:
    """Random proposals (per_image: a count, or one per image), logits that favour one class per RoI (by
    `confident`), random deltas."""
    counts = per_image if isinstance(per_image, list) else [per_image] * len(sizes)
    proposals = [_proposals(n, h, w) for n, (h, w) in zip(counts, sizes)]
    total = sum(counts)
    logits = torch.randn(total, num_classes)
    logits[torch.arange(total), torch.randint(0, num_classes, (total,))] += confident
    deltas = torch.randn(total, 4 * num_classes) * spread
    return Case(name, (logits, deltas, proposals, sizes, *settings), extra=extra)


def _postprocess_cases() -> list[Case]:
    tied = torch.zeros(3, 2)  # softmax of (0, 0): exactly 0.5 for the object class
    tied[2, 1] = 2.0
    at_threshold = Case(
        "a score exactly at the threshold is dropped (strictly greater)",
        (tied, torch.zeros(3, 8), [_proposals(3, 40, 40)], [(40, 40)], 0.5),
    )
    outside = _detection_case("boxes decoded outside the image are clipped", [(32, 48)], 6, 3, spread=4.0)
    beyond = torch.tensor([[10.0, 10, 30, 30], [60, 5, 80, 25], [5, 50, 20, 70], [41, 41, 45, 45]])
    flat = Case(  # proposals right of, under and past the 40 x 40 image: clipped to a line on its border
        "boxes clipped flat against the border are dropped",
        (torch.tensor([[0.0, 4.0]]).repeat(4, 1), torch.zeros(4, 8), [beyond], [(40, 40)]),
    )
    flat_too = Case(
        "flat boxes among others, another image size",
        (torch.tensor([[0.0, 3.0, 1.0]]).repeat(5, 1), torch.zeros(5, 12), [beyond[[0, 1, 2, 0, 3]] * 0.8], [(30, 50)]),
        extra=True,
    )
    return [
        _detection_case("one image, 8 proposals, 3 classes", [(64, 64)], 8, 3),
        _detection_case("two images of different sizes", [(64, 48), (40, 80)], 10, 4),
        _detection_case("keep the best 5 (detections_per_img)", [(64, 64)], 20, 3, 0.05, 0.5, 5),
        outside,
        _detection_case("an image without proposals", [(64, 64), (48, 48)], [6, 0], 3),
        at_threshold,
        flat,
        flat_too,
        _detection_case("many proposals, 6 classes, NMS 0.3", [(128, 128)], 150, 6, 0.05, 0.3, extra=True),
        _detection_case(
            "another score threshold and weights", [(50, 70)], 12, 3, 0.2, 0.5, 100, (1.0, 1.0, 1.0, 1.0), extra=True
        ),
        _detection_case("a background-heavy image: few survive", [(64, 64)], 10, 3, 0.6, extra=True),
        _detection_case("three images", [(64, 64), (32, 32), (64, 40)], [7, 3, 9], 3, extra=True),
    ]


def _with_background(class_logits, box_regression, proposals, image_sizes, *settings):
    """Background kept as a class: as if a class below it never scores, and every label one higher."""
    never = torch.full((len(class_logits), 1), -torch.inf)
    boxes, scores, labels = box_head.postprocess_detections(
        torch.cat([never, class_logits], dim=1),
        torch.cat([torch.zeros(len(box_regression), 4), box_regression], 1),
        proposals,
        image_sizes,
        *settings,
    )
    return boxes, scores, [l - 1 for l in labels]


def _small_boxes_kept(*args):
    def keep_every_box(boxes, min_size):
        return torch.arange(len(boxes))

    with components.using(remove_small_boxes=keep_every_box):
        return box_head.postprocess_detections(*args)


def _nms_across_classes(*args):
    def nms_ignoring_classes(boxes, scores, idxs, iou_threshold):
        return components.nms(boxes, scores, iou_threshold)

    with components.using(batched_nms=nms_ignoring_classes):
        return box_head.postprocess_detections(*args)


def _with_setting(name: str, change) -> Callable:
    """The reference with one argument replaced (a value, or a function of the old one, defaults included):
    what leaving out a step gives."""
    signature = inspect.signature(box_head.postprocess_detections)

    def wrong(*args):
        arguments = signature.bind(*args)
        arguments.apply_defaults()
        old = arguments.arguments[name]
        arguments.arguments[name] = change(old) if callable(change) else change
        return box_head.postprocess_detections(*arguments.args)

    return wrong


@exercise(
    cases=_postprocess_cases,
    hint="softmax over the classes; decode every RoI's box for every class (components.decode_boxes(box_regression, "
    "proposals, weights, clip) with the proposals concatenated, clip = log(1000 / 16)); per image: clip to its "
    "size (components.clip_boxes_to_image), drop column 0 (background), flatten so each (RoI, class) is one "
    "candidate with its label, keep scores > score_thresh (strictly), drop boxes with a side < 0.01 "
    "(components.remove_small_boxes), NMS per class (components.batched_nms with the labels), keep the first "
    "detections_per_img; return three lists (boxes, scores, labels), one entry per image.",
    steps=(
        "Probabilities from the logits; every box of every class decoded at once (components.decode_boxes).",
        "Split the scores and boxes back into images (each image's number of proposals).",
        "For each image: clip its boxes; a labels tensor shaped like its scores, each column its class "
        "index; drop the background column of boxes, scores and labels, and flatten all three.",
        "Keep the candidates above the threshold, then those components.remove_small_boxes keeps.",
        "components.batched_nms with the labels as its groups, cut at detections_per_img.",
    ),
    mistakes=(
        Mistake(
            "background (class 0) is not a detection: drop the first column of scores and boxes.", _with_background
        ),
        Mistake(
            "NMS runs per class (components.batched_nms with the labels): a dog must not suppress an overlapping cat.",
            _nms_across_classes,
        ),
        Mistake("keep scores strictly greater than score_thresh.", _with_setting("score_thresh", lambda t: t - 1e-6)),
        Mistake(
            "keep only the detections_per_img best detections of each image.",
            _with_setting("detections_per_img", 10**9),
        ),
        Mistake(
            "clip the boxes to each image's own size (components.clip_boxes_to_image).",
            _with_setting("image_sizes", lambda sizes: [(10**6, 10**6)] * len(sizes)),
        ),
        Mistake(
            "decode with the box head's weights (the `weights` argument, (10, 10, 5, 5) in the model).",
            _with_setting("weights", (1.0, 1.0, 1.0, 1.0)),
        ),
        Mistake(
            "drop boxes with a side under 0.01 pixel (components.remove_small_boxes(boxes, 1e-2)): a box "
            "clipped flat against the image's border is no detection.",
            _small_boxes_kept,
        ),
    ),
    atol=1e-4,
    rtol=1e-5,
    torchvision_names=(f"{ROI_HEADS}.RoIHeads.postprocess_detections",),
)
def check_postprocess_detections(postprocess_detections: Callable, extra: bool = False) -> None:
    """Check your postprocess_detections(...) -> (boxes, scores, labels), each a list of one tensor per image."""
