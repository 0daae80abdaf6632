"""The exercises of stage 5, the box head (lesson 05): the head's and the predictor's forwards, the training
samples, fastrcnn_loss and postprocess_detections."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_two_mlp_head",
    "check_fastrcnn_predictor",
    "check_select_training_samples",
    "check_fastrcnn_loss",
    "check_postprocess_detections",
]

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mrcnn_course.model import box_head, components
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher, match_to_ground_truth
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake
from mrcnn_course.teaching.grading.judge import Difference, difference

ROI_HEADS = "torchvision.models.detection.roi_heads"
SAMPLES_ATOL, SAMPLES_RTOL = 1e-4, 1e-5  # select_training_samples' regression targets (its integers: exactly)


def _mlp_case(name: str, count: int, channels: int, side: int, width: int, extra: bool = False) -> Case:
    head = box_head.TwoMLPHead(channels * side * side, width)
    note = f"TwoMLPHead: fc6 {channels * side * side} -> {width}, fc7 {width} -> {width}"
    return Case(name, (head, torch.randn(count, channels, side, side)), notes={"head": note}, extra=extra)


def _two_mlp_head_cases() -> list[Case]:
    return [
        _mlp_case("8 RoIs, 4 channels of 7 x 7", 8, 4, 7, 16),
        _mlp_case("one RoI: still a batch, Tensor[1, D]", 1, 4, 7, 16),
        _mlp_case("no RoIs (an image the RPN found nothing in)", 0, 4, 7, 16),
        _mlp_case("12 RoIs, 8 channels of 5 x 5, width 32", 12, 8, 5, 32, extra=True),
        _mlp_case("one RoI, 2 channels of 3 x 3", 1, 2, 3, 8, extra=True),
        _mlp_case("no RoIs, 8 channels of 5 x 5", 0, 8, 5, 32, extra=True),
    ]


@exercise(
    cases=_two_mlp_head_cases,
    hint="x.flatten(start_dim=1) (each RoI's grid one row, whatever K, even 0); then F.relu(self.fc6(x)), then "
    "F.relu(self.fc7(x)): a ReLU after each layer. Don't call self(x): that is the forward you are writing.",
    steps=(
        "Each RoI's C x 7 x 7 grid becomes one row of C * 49 numbers: flatten every dimension but the first.",
        "The first fully connected layer, self.fc6, then a ReLU.",
        "The second, self.fc7, then a ReLU again: the MLP's output is the last ReLU's.",
    ),
    mistakes=(
        Mistake(
            "a ReLU follows fc7 too (torchvision's TwoMLPHead): the predictor's linear layers come after it.",
            lambda head, x: head.fc7(F.relu(head.fc6(x.flatten(start_dim=1)))),
        ),
        Mistake(
            "a ReLU follows fc6: without it, fc6 and fc7 together are one linear map.",
            lambda head, x: F.relu(head.fc7(head.fc6(x.flatten(start_dim=1)))),
        ),
        Mistake(
            "flatten from dimension 1 (x.flatten(start_dim=1)): each RoI is one row; x.flatten() makes one "
            "vector of all of them.",
            lambda head, x: F.relu(head.fc7(F.relu(head.fc6(x.flatten())))),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=("torchvision.models.detection.faster_rcnn.TwoMLPHead.forward",),
)
def check_two_mlp_head(two_mlp_head: Callable, extra: bool = False) -> None:
    """Check your TwoMLPHead's forward(self, x) -> Tensor[K, D] (the class or the function) against the reference."""


def _predictor_case(name: str, count: int, features: int, classes: int, four_d: bool = False, extra=False) -> Case:
    predictor = box_head.FastRCNNPredictor(features, classes)
    x = torch.randn(count, features, *((1, 1) if four_d else ()))
    note = f"FastRCNNPredictor: cls_score {features} -> {classes}, bbox_pred {features} -> {4 * classes}"
    return Case(name, (predictor, x), notes={"predictor": note}, extra=extra)


def _fastrcnn_predictor_cases() -> list[Case]:
    return [
        _predictor_case("6 RoIs of 32 features, 4 classes", 6, 32, 4),
        _predictor_case("4-d input Tensor[K, D, 1, 1]: flattened first", 5, 16, 3, four_d=True),
        _predictor_case("one RoI, 2 classes", 1, 8, 2),
        _predictor_case("10 RoIs, 91 classes (COCO)", 10, 16, 91, extra=True),
        _predictor_case("4-d input, 6 classes", 3, 24, 6, four_d=True, extra=True),
        _predictor_case("one RoI, 5 classes", 1, 12, 5, extra=True),
    ]


@exercise(
    cases=_fastrcnn_predictor_cases,
    hint="x = x.flatten(start_dim=1) (a 4-d (K, D, 1, 1) input too); return (self.cls_score(x), self.bbox_pred(x)): "
    "raw logits, no softmax and no ReLU, class logits first.",
    steps=(
        "Make x one row per RoI: flatten every dimension but the first (a 4-d input is K x D x 1 x 1).",
        "The class logits: self.cls_score of those rows, as they are.",
        "The box deltas: self.bbox_pred of the same rows.",
        "Return the two, class logits first.",
    ),
    mistakes=(
        Mistake(
            "return (class logits, box deltas), in this order (torchvision's FastRCNNPredictor).",
            lambda predictor, x: box_head.fastrcnn_predictor(predictor, x)[::-1],
        ),
        Mistake(
            "return the logits, not probabilities: the loss's cross-entropy and post-processing apply the softmax.",
            lambda predictor, x: (
                F.softmax(predictor.cls_score(x.flatten(start_dim=1)), dim=1),
                predictor.bbox_pred(x.flatten(start_dim=1)),
            ),
        ),
        Mistake(
            "the predictor is linear: no ReLU on its outputs (logits and deltas are often negative).",
            lambda predictor, x: tuple(F.relu(y) for y in box_head.fastrcnn_predictor(predictor, x)),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=("torchvision.models.detection.faster_rcnn.FastRCNNPredictor.forward",),
)
def check_fastrcnn_predictor(fastrcnn_predictor: Callable, extra: bool = False) -> None:
    """Check your FastRCNNPredictor's forward(self, x) -> (Tensor[K, C], Tensor[K, 4C]) (the class or the function)."""


def _scene(
    objects: list[list[int]], classes: list[int], near: int, far: int, size: int = 100
) -> tuple[Tensor, dict[str, Tensor]]:
    """Proposals of one image: `near` jittered around each object (from a close fit to a poor one), `far` random
    ones anywhere in a size x size image; and its target (boxes, labels)."""
    boxes = torch.tensor(objects, dtype=torch.float32).reshape(-1, 4)
    pieces = []
    for box in boxes:
        sides = (box[2:] - box[:2]).repeat(2)  # (w, h, w, h)
        pieces.append(box + torch.randn(near, 4) * sides * torch.rand(near, 1) * 0.4)
    corners = torch.rand(far, 2) * size * 0.8
    pieces.append(torch.cat([corners, corners + 4 + torch.rand(far, 2) * size * 0.3], dim=1))
    proposals = torch.cat(pieces)
    x1y1 = torch.minimum(proposals[:, :2], proposals[:, 2:] - 1)  # jittering may swap corners: keep x1 < x2, y1 < y2
    proposals = torch.cat([x1y1, torch.maximum(proposals[:, 2:], x1y1 + 1)], dim=1)
    return proposals, {"boxes": boxes, "labels": torch.tensor(classes, dtype=torch.int64)}


def _samples_case(
    name: str,
    scenes: list[tuple[Tensor, dict[str, Tensor]]],
    thresholds: tuple[float, float] = (0.5, 0.5),
    sample: tuple[int, float] = (16, 0.25),
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    seed: int = 7,
    extra: bool = False,
) -> Case:
    proposals, targets = [p for p, _ in scenes], [t for _, t in scenes]
    matcher, sampler = Matcher(*thresholds), BalancedPositiveNegativeSampler(*sample)
    args = (proposals, targets, matcher, sampler, BoxCoder(weights), torch.Generator().manual_seed(seed))
    notes = {"box_coder": f"BoxCoder(weights={weights})", "generator": f"torch.Generator().manual_seed({seed})"}
    return Case(name, args, notes=notes, extra=extra, compare=_positives_compared)


def _select_training_samples_cases() -> list[Case]:
    two = [[10, 10, 40, 40], [50, 20, 90, 70]]
    none: list[list[int]] = []
    return [
        _samples_case(
            "one image, 2 objects, 40 proposals: 16 sampled, at most 4 positive", [_scene(two, [3, 1], 12, 16)]
        ),
        _samples_case(
            "an object no proposal overlaps: its own box is its positive",
            [_scene([[60, 60, 80, 90]], [2], 0, 20, size=50)],
        ),
        _samples_case(
            "two images, the second without objects: all its RoIs are background",
            [_scene(two, [1, 2], 6, 10), _scene(none, [], 0, 12)],
        ),
        _samples_case(
            "a matcher with a gap (0.6 / 0.4): RoIs in between are never sampled",
            [_scene(two, [1, 2], 15, 10)],
            thresholds=(0.6, 0.4),
            sample=(64, 0.5),
        ),
        _samples_case(
            "the model's sampling: 512 RoIs per image, at most a quarter positive",
            [_scene(two, [2, 4], 200, 400), _scene([[5, 5, 60, 50]], [5], 300, 300)],
            sample=(512, 0.25),
        ),
        _samples_case(
            "three images, the first without objects",
            [_scene(none, [], 0, 9), _scene(two, [4, 4], 8, 8), _scene([[30, 30, 70, 60]], [1], 10, 5)],
            seed=3,
            extra=True,
        ),
        _samples_case(
            "another gap (0.7 / 0.3) and weights (1, 1, 1, 1)",
            [_scene(two, [2, 3], 20, 10)],
            thresholds=(0.7, 0.3),
            sample=(48, 0.5),
            weights=(1.0, 1.0, 1.0, 1.0),
            extra=True,
        ),
        _samples_case(
            "two objects far from every proposal, another sample size",
            [_scene([[70, 5, 95, 30], [5, 70, 30, 95]], [1, 5], 0, 15, size=40)],
            sample=(8, 0.5),
            seed=11,
            extra=True,
        ),
        _samples_case(
            "many positives: 256 at most a quarter, two images",
            [_scene(two, [5, 3], 150, 100), _scene(two, [1, 1], 100, 200)],
            sample=(256, 0.25),
            seed=5,
            extra=True,
        ),
    ]


def _positives_compared(expected: tuple, got: tuple, case: Case) -> Difference | None:
    """The sampled RoIs and labels compared whole; the matched indices and regression targets on the positive
    RoIs only: a background RoI's are never read (the loss and the mask targets take the positives')."""
    found = difference(expected, got, SAMPLES_ATOL, SAMPLES_RTOL)
    if found is None:
        return None
    try:  # the background rows of got's indices and targets replaced by the expected ones, where shapes agree
        patched = list(got)
        for part in (1, 3):
            patched[part] = [
                torch.where((labels > 0).reshape(-1, *[1] * (mine.dim() - 1)), mine, theirs)
                for labels, mine, theirs in zip(expected[2], got[part], expected[part], strict=True)
            ]
    except (TypeError, RuntimeError, IndexError, ValueError, AttributeError):
        return found  # another structure or shape: the first difference says so
    return difference(expected, tuple(patched), SAMPLES_ATOL, SAMPLES_RTOL)


def _samples_with(
    proposals,
    targets,
    matcher,
    sampler,
    box_coder,
    generator,
    *,
    add_gt: str = "after",
    order: str = "index",
    between: int = -1,
    label: str = "class",
    swap_encode: bool = False,
):
    """The training samples with one usual mistake (the keywords say which): add_gt "after" (right), "before" or
    "no"; order "index" (right) or "positives first"; `between` the label of RoIs between the thresholds (-1
    right); label "class" (right) or "index"; swap_encode: encode(RoIs, matched boxes)."""
    all_rois, all_matches, all_labels = [], [], []
    for proposals_in_image, target in zip(proposals, targets):
        gt_boxes = target["boxes"]
        orders = {"after": [proposals_in_image, gt_boxes], "before": [gt_boxes, proposals_in_image]}
        rois = torch.cat(orders.get(add_gt, [proposals_in_image]))
        matches = torch.zeros(len(rois), dtype=torch.int64)
        labels = torch.zeros(len(rois), dtype=torch.int64)
        if len(gt_boxes):
            codes = match_to_ground_truth(matcher, gt_boxes, rois)
            matches = codes.clamp(min=0)
            labels = (target["labels"][matches] if label == "class" else matches).clone()
            labels[codes == Matcher.BELOW_LOW_THRESHOLD] = 0
            labels[codes == Matcher.BETWEEN_THRESHOLDS] = between
        all_rois.append(rois)
        all_matches.append(matches)
        all_labels.append(labels)
    positives, negatives = sampler(all_labels, generator)
    if order == "index":
        sampled = [torch.where(pos | neg)[0] for pos, neg in zip(positives, negatives)]
    else:
        sampled = [torch.cat([torch.where(pos)[0], torch.where(neg)[0]]) for pos, neg in zip(positives, negatives)]
    sampled_rois = [r[s] for r, s in zip(all_rois, sampled)]
    sampled_matches = [m[s] for m, s in zip(all_matches, sampled)]
    boxes_to_match = [t["boxes"] if len(t["boxes"]) else torch.zeros(1, 4) for t in targets]
    matched = [g[m] for g, m in zip(boxes_to_match, sampled_matches)]
    regression = box_coder.encode(sampled_rois, matched) if swap_encode else box_coder.encode(matched, sampled_rois)
    return sampled_rois, sampled_matches, [l[s] for l, s in zip(all_labels, sampled)], regression


@exercise(
    cases=_select_training_samples_cases,
    hint="per image: rois = torch.cat((proposals, gt boxes)); codes = matcher(components.box_iou(gt boxes, rois)) "
    "(no objects: every RoI background, index 0, without the matcher); index = codes.clamp(min=0); label = "
    "the class of that index, 0 where code -1, -1 where code -2; then sampler(all labels, generator) once; "
    "keep torch.where(positive | negative) of each image, in that order; targets = box_coder.encode(matched "
    "gt boxes, sampled RoIs); return (RoIs, indices, labels, targets), each a list per image.",
    steps=(
        "For each image, append its ground-truth boxes after its proposals: these are its RoIs.",
        "Match: the matcher takes the IoU matrix of the ground-truth boxes (rows) with the RoIs (columns) and "
        "gives each RoI a box index or a negative code. An image without objects skips it: all background.",
        "Labels: the matched box's class, 0 where the code is Matcher.BELOW_LOW_THRESHOLD, -1 where it is "
        "Matcher.BETWEEN_THRESHOLDS; the index: the code clamped at 0.",
        "Sample: call the sampler once with every image's labels and the generator; each image's sampled RoIs "
        "are those where either mask is set (torch.where), in the order they have in its list.",
        "Index the RoIs, the indices and the labels with them; the targets: box_coder.encode of each sampled "
        "RoI's ground-truth box (its index into the image's boxes) against the RoI.",
    ),
    mistakes=(
        Mistake(
            "add each image's ground-truth boxes to its proposals (after them): every object then has a "
            "perfect positive, even one that no proposal overlaps.",
            lambda *args: _samples_with(*args, add_gt="no"),
        ),
        Mistake(
            "the ground-truth boxes go AFTER the proposals (torch.cat((proposals, gt_boxes))), as torchvision's "
            "add_gt_proposals: the RoIs' order decides which the sampler draws.",
            lambda *args: _samples_with(*args, add_gt="before"),
        ),
        Mistake(
            "keep the sampled RoIs in their order in the image's list (torch.where(positive | negative)), not "
            "the positives first.",
            lambda *args: _samples_with(*args, order="positives first"),
        ),
        Mistake(
            "a RoI between the matcher's thresholds (Matcher.BETWEEN_THRESHOLDS) is ignored: label -1, which "
            "the sampler never draws; only those below the low threshold are background (0).",
            lambda *args: _samples_with(*args, between=0),
        ),
        Mistake(
            "a positive RoI's label is its object's class (target['labels'] at the matched index), not the index.",
            lambda *args: _samples_with(*args, label="index"),
        ),
        Mistake(
            "the regression target is the ground-truth box encoded relative to its RoI: box_coder.encode(matched "
            "boxes, RoIs), in this order.",
            lambda *args: _samples_with(*args, swap_encode=True),
        ),
    ),
    fast="per image, one IoU matrix and one matcher call for all its RoIs; one sampler call for all images; select "
    "with index tensors (torch.where): no Python loop over RoIs",
    atol=SAMPLES_ATOL,
    rtol=SAMPLES_RTOL,
    torchvision_names=(f"{ROI_HEADS}.RoIHeads.select_training_samples",),
)
def check_select_training_samples(select_training_samples: Callable, extra: bool = False) -> None:
    """Check your select_training_samples(proposals, targets, matcher, sampler, box_coder, generator) -> (RoIs,
    matched indices, labels, regression targets), each a list of one tensor per image."""


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
    tied_four = torch.zeros(4, 4)  # softmax of four zeros: exactly 0.25 for each class
    tied_four[1, 3] = 2.0
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
        Case(
            "scores exactly at the threshold 0.25 are dropped, two images",
            (tied_four, torch.zeros(4, 16), [_proposals(2, 50, 30), _proposals(2, 30, 50)], [(50, 30), (30, 50)], 0.25),
            extra=True,
        ),
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
