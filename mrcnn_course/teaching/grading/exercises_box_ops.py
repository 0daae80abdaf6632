"""The exercises of the box operations of stage 3: encode_boxes, decode_boxes, box_iou, nms and nms_fast (lesson 03).

nms is the greedy loop, checked for correctness; nms_fast writes the same component again, fast: its speed
case and its steps (ideas, one at a time) are what make it an exercise of its own."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_encode_boxes",
    "check_decode_boxes",
    "check_box_iou",
    "check_nms",
    "check_nms_fast",
]

import math
from collections.abc import Callable

import torch

from mrcnn_course.model import box_ops
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake
from mrcnn_course.teaching.grading.judge import Difference, difference, short

BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def _boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _random_boxes(n: int, size: float = 100.0) -> torch.Tensor:
    """n boxes with x2 > x1 and y2 > y1 inside a size x size image."""
    corners = torch.rand(n, 2) * size * 0.8
    sides = torch.rand(n, 2) * size * 0.4 + 1
    return torch.cat([corners, corners + sides], dim=1)


def _as_if_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """What a reader of (x, y, w, h) boxes computes with: the (x1, y1, x2, y2) it would imply."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def _plus_one(boxes: torch.Tensor) -> torch.Tensor:
    """What a reader of widths as x2 - x1 + 1 (the old pixel-count convention) computes with."""
    return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])


def _encode_cases() -> list[Case]:
    anchors = _boxes([0, 0, 16, 16], [10, 20, 42, 36], [5, 5, 15, 45])
    matched = _boxes([2, 1, 18, 20], [0, 10, 50, 40], [5, 5, 15, 45])
    return [
        Case("RPN weights (1, 1, 1, 1)", (matched, anchors, RPN_WEIGHTS)),
        Case("box-head weights (10, 10, 5, 5)", (matched, anchors, BOX_HEAD_WEIGHTS)),
        Case("a box equal to its anchor: zero deltas", (anchors[:1], anchors[:1], BOX_HEAD_WEIGHTS)),
        Case("no boxes", (_boxes(), _boxes(), RPN_WEIGHTS)),
        Case(
            "far apart, very different sizes",
            (_boxes([300, 300, 700, 320]), _boxes([0, 0, 8, 8]), (2.0, 3.0, 4.0, 5.0)),
            extra=True,
        ),
        Case("many boxes", (_random_boxes(50), _random_boxes(50), BOX_HEAD_WEIGHTS), extra=True),
    ]


@exercise(
    cases=_encode_cases,
    hint="with centres and sizes (widths are x2 - x1, no +1): dx = wx * (gx - px) / pw, dy = wy * (gy - py) / ph, "
    "dw = ww * log(gw / pw), dh = wh * log(gh / ph), where g is the reference (matched) box and p the "
    "proposal; return Tensor[N, 4].",
    steps=(
        "The proposals' widths and heights (no + 1) and their centres.",
        "The same for the reference boxes.",
        "Each of the four formulas of the docstring is one line of tensor arithmetic (torch.log for the sizes).",
        "Stack the four results as the columns of the answer.",
    ),
    mistakes=(
        Mistake(
            "the weights were left out: multiply dx, dy, dw, dh by wx, wy, ww, wh (e.g. 10, 10, 5, 5).",
            lambda ref, proposals, weights: box_ops.encode_boxes(ref, proposals, RPN_WEIGHTS),
        ),
        Mistake(
            "boxes are (x1, y1, x2, y2), not (x, y, w, h): the width is x2 - x1.",
            lambda ref, proposals, weights: box_ops.encode_boxes(_as_if_xywh(ref), _as_if_xywh(proposals), weights),
        ),
        Mistake(
            "the two arguments are swapped: the deltas move the PROPOSAL onto the reference box.",
            lambda ref, proposals, weights: box_ops.encode_boxes(proposals, ref, weights),
        ),
        Mistake(
            "widths are x2 - x1 and heights y2 - y1, with no + 1 (boxes are continuous coordinates).",
            lambda ref, proposals, weights: box_ops.encode_boxes(_plus_one(ref), _plus_one(proposals), weights),
        ),
    ),
    atol=1e-4,
    rtol=1e-4,
    torchvision_names=(
        "torchvision.models.detection._utils.encode_boxes",
        "torchvision.models.detection._utils.BoxCoder.encode_single",
        "torchvision.models.detection._utils.BoxCoder.encode",
    ),
)
def check_encode_boxes(encode_boxes: Callable, extra: bool = False) -> None:
    """Check your encode_boxes(reference_boxes, proposals, weights) -> Tensor[N, 4] against the reference."""


def _decode_cases() -> list[Case]:
    boxes = _boxes([0, 0, 16, 16], [10, 20, 42, 36])
    deltas = torch.tensor([[0.1, -0.2, 0.3, -0.1], [-0.5, 0.25, 0.0, 0.4]])
    clip = box_ops.BBOX_XFORM_CLIP
    return [
        Case("zero deltas give the boxes back", (torch.zeros(2, 4), boxes, RPN_WEIGHTS, clip)),
        Case("RPN weights (1, 1, 1, 1)", (deltas, boxes, RPN_WEIGHTS, clip)),
        Case("box-head weights (10, 10, 5, 5)", (deltas * 10, boxes, BOX_HEAD_WEIGHTS, clip)),
        Case("three classes: deltas Tensor[N, 4 * 3]", (torch.randn(2, 12), boxes, BOX_HEAD_WEIGHTS, clip)),
        Case("huge dw and dh: clamp before exp", (torch.tensor([[0.0, 0.0, 10.0, 8.0]]), boxes[:1], RPN_WEIGHTS, clip)),
        Case("no boxes", (torch.zeros(0, 4), _boxes(), RPN_WEIGHTS, clip)),
        Case(
            "very negative dw and dh are not clamped",
            (torch.tensor([[0.0, 0.0, -10.0, -8.0]]), boxes[:1], RPN_WEIGHTS, clip),
        ),
        Case(
            "very negative and huge dw, dh, box-head weights",
            (torch.tensor([[1.0, -1.0, -40.0, 45.0], [0.5, 0.5, 30.0, -25.0]]), boxes, BOX_HEAD_WEIGHTS, clip),
            extra=True,
        ),
        Case(
            "another clip value",
            (torch.tensor([[0.5, 0.5, 3.0, 0.2]]), boxes[1:], (2.0, 2.0, 1.0, 1.0), 1.0),
            extra=True,
        ),
    ]


def _clamped_both_ways(deltas, boxes, weights, clip):
    deltas = deltas.clone()
    deltas[:, 2::4] = deltas[:, 2::4].clamp(min=-clip * weights[2])  # dw / ww >= -clip
    deltas[:, 3::4] = deltas[:, 3::4].clamp(min=-clip * weights[3])
    return box_ops.decode_boxes(deltas, boxes, weights, clip)


@exercise(
    cases=_decode_cases,
    hint="undo encode_boxes: divide the deltas by the weights; clamp dw and dh at `clip` (above only) BEFORE "
    "exp; centre = d * size + centre, size = exp(d) * size; corners = centre -/+ size / 2; deltas hold 4 "
    "numbers per class (use deltas[:, 0::4] etc.); return Tensor[N, C, 4].",
    steps=(
        "The boxes' widths, heights and centres, each kept as a column (N, 1) so that it broadcasts over "
        "the C classes.",
        "dx, dy, dw, dh of every class: every 4th column of deltas, starting at 0, 1, 2 and 3 (N, C each), "
        "each divided by its weight.",
        "Limit dw and dh from above only (Tensor.clamp with max).",
        "New centres: move each centre by d times the size; new sizes: the size times exp(d).",
        "The four corners from the new centres and sizes, stacked on a new last axis: (N, C, 4).",
    ),
    mistakes=(
        Mistake(
            "the weights were left out: divide the deltas by (wx, wy, ww, wh) first.",
            lambda deltas, boxes, weights, clip: box_ops.decode_boxes(deltas, boxes, RPN_WEIGHTS, clip),
        ),
        Mistake(
            "dw and dh were not clamped: clamp them at `clip` before exp, or an untrained head gives huge boxes.",
            lambda deltas, boxes, weights, clip: box_ops.decode_boxes(deltas, boxes, weights, math.inf),
        ),
        Mistake("dw and dh are clamped from above only (max=clip): shrinking boxes is allowed.", _clamped_both_ways),
        Mistake(
            "the output is Tensor[N, C, 4]: reshape (N, 4 * C) to (N, C, 4).",
            lambda deltas, boxes, weights, clip: box_ops.decode_boxes(deltas, boxes, weights, clip).flatten(1),
        ),
    ),
    atol=1e-3,
    rtol=1e-4,
    torchvision_names=(
        "torchvision.models.detection._utils.BoxCoder.decode_single",
        "torchvision.models.detection._utils.BoxCoder.decode",
    ),
)
def check_decode_boxes(decode_boxes: Callable, extra: bool = False) -> None:
    """Check your decode_boxes(deltas, boxes, weights, clip) -> Tensor[N, C, 4] against the reference."""


def _iou_cases() -> list[Case]:
    square = _boxes([0, 0, 10, 10])
    return [
        Case("identical boxes", (square, square)),
        Case("disjoint boxes", (square, _boxes([20, 20, 30, 30]))),
        Case("a box inside another", (square, _boxes([2, 2, 6, 6]))),
        Case("boxes touching at an edge: no overlap", (square, _boxes([10, 0, 20, 10]))),
        Case(
            "3 x 2 pairs, partial overlaps",
            (_boxes([0, 0, 10, 10], [5, 5, 15, 15], [0, 5, 10, 20]), _boxes([5, 0, 15, 10], [2, 3, 8, 30])),
        ),
        Case("a zero-area box", (_boxes([5, 5, 5, 5]), square)),
        Case("no boxes on one side", (_boxes(), _boxes([0, 0, 1, 1], [2, 2, 3, 3]))),
        Case("30 x 20 random boxes", (_random_boxes(30), _random_boxes(20)), extra=True),
        Case("fractional coordinates", (_boxes([0.5, 0.25, 3.75, 2.5]), _boxes([1.125, 0, 2.5, 4.0])), extra=True),
    ]


def _iou_without_clamp(boxes1, boxes2):
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = bottom_right - top_left
    intersection = wh[..., 0] * wh[..., 1]
    union = box_ops.box_area(boxes1)[:, None] + box_ops.box_area(boxes2)[None, :] - intersection
    return intersection / union


@exercise(
    cases=_iou_cases,
    hint="intersection: top-left = max of the top-lefts, bottom-right = min of the bottom-rights, sides clamped "
    "at 0 (no overlap -> 0); union = area1 + area2 - intersection; broadcast boxes1[:, None] against "
    "boxes2[None] to get Tensor[N, M]; boxes are (x1, y1, x2, y2).",
    steps=(
        "The overlap of every pair at once: index boxes1 with [:, None] and boxes2 with [None, :]. Its "
        "top-left is the larger of the two top-lefts, its bottom-right the smaller of the two "
        "bottom-rights (torch.max and torch.min of two tensors): (N, M, 2) each.",
        "Its width and height: bottom-right minus top-left, never below 0.",
        "Its area, and the area of each box of either list.",
        "The intersection over the union, with the areas broadcast the same way as the corners.",
    ),
    fast="broadcast boxes1[:, None] against boxes2[None]: one tensor operation per step, no loop over boxes",
    mistakes=(
        Mistake(
            "boxes are (x1, y1, x2, y2), not (x, y, w, h).",
            lambda b1, b2: box_ops.box_iou(_as_if_xywh(b1), _as_if_xywh(b2)),
        ),
        Mistake(
            "the overlap's width and height must be clamped at 0: two negative sides multiply to a "
            "positive 'intersection' for boxes that do not overlap.",
            _iou_without_clamp,
        ),
        Mistake(
            "widths are x2 - x1 and heights y2 - y1, with no + 1 (boxes are continuous coordinates).",
            lambda b1, b2: box_ops.box_iou(_plus_one(b1), _plus_one(b2)),
        ),
        Mistake(
            "the union is area1 + area2 - intersection (the overlap was counted twice).",
            lambda b1, b2: (lambda iou: iou / (1 + iou))(box_ops.box_iou(b1, b2)),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(
        "torchvision.ops.box_iou",
        "torchvision.ops.boxes.box_iou",
        "torchvision.ops.boxes._box_inter_union",
    ),
)
def check_box_iou(box_iou: Callable, extra: bool = False) -> None:
    """Check your box_iou(boxes1, boxes2) -> Tensor[N, M] against the reference."""


def _same_set_by_score(expected, got, case: Case) -> Difference | None:
    """For tied scores: the same indices in any order that keeps the scores non-increasing."""
    scores = case.args[1]
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64 or got.dim() != 1:
        return difference(expected, got, 0.0, 0.0)
    found = difference(expected.sort().values, got.sort().values, 0.0, 0.0, "output, sorted")
    if found:
        return found
    if len(got) > 1 and bool((scores[got][1:] > scores[got][:-1]).any()):
        return Difference("output", short(expected), short(got), "the indices are not by decreasing score")
    return None


def _nms_cases() -> list[Case]:
    many = _random_boxes(200)
    return [
        Case("no boxes", (_boxes(), torch.zeros(0), 0.5)),
        Case("one box", (_boxes([0, 0, 10, 10]), torch.tensor([0.3]), 0.5)),
        Case(
            "two overlapping boxes: the lower score goes",
            (_boxes([0, 0, 10, 10], [1, 1, 11, 11]), torch.tensor([0.6, 0.9]), 0.5),
        ),
        Case(
            "scores not sorted",
            (
                _boxes([0, 0, 10, 10], [50, 50, 60, 60], [1, 0, 11, 10], [49, 50, 60, 61]),
                torch.tensor([0.1, 0.5, 0.9, 0.3]),
                0.5,
            ),
        ),
        Case(
            "IoU exactly at the threshold is kept",
            (_boxes([0, 0, 10, 10], [0, 0, 10, 5]), torch.tensor([0.9, 0.8]), 0.5),
        ),
        Case(
            "a suppressed box suppresses nothing",
            (_boxes([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]), torch.tensor([0.9, 0.8, 0.7]), 0.5),
        ),
        Case(
            "tied scores, no overlap",
            (_boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]), torch.tensor([0.5, 0.7, 0.5]), 0.5),
            compare=_same_set_by_score,
        ),
        Case("600 boxes crowded in a small image", (_random_boxes(600, 60.0), torch.rand(600), 0.5)),
        Case(
            "a zero-area box among others",
            (_boxes([0, 0, 10, 10], [5, 5, 5, 5], [1, 1, 11, 11]), torch.tensor([0.5, 0.9, 0.7]), 0.5),
            extra=True,
        ),
        Case("200 random boxes", (many, torch.rand(200), 0.5), extra=True),
        Case("threshold 0: any overlap suppresses", (many[:50], torch.rand(50), 0.0), extra=True),
        Case("threshold 1: nothing is suppressed", (many[:30], torch.rand(30), 1.0), extra=True),
        Case("900 boxes crowded, threshold 0.7", (_random_boxes(900, 80.0), torch.rand(900), 0.7), extra=True),
    ]


def _one_pass(boxes, scores, iou_threshold):
    """Fast NMS (one pass over the IoU matrix): every box that a better box overlaps goes, even when that better
    box is itself suppressed."""
    order = scores.argsort(descending=True, stable=True)
    overlaps = (box_ops.box_iou(boxes[order], boxes[order]) > iou_threshold).triu(diagonal=1)
    return order[~overlaps.any(dim=0)]


NMS_HINT = (
    "sort by score, highest first; take the best box still in play, keep it, and drop every remaining box whose "
    "IoU with it is > iou_threshold (strictly); repeat, so that a dropped box suppresses nothing. Return the kept "
    "boxes' indices into the ORIGINAL boxes, as int64, by decreasing score (also for no boxes: "
    "torch.empty(0, dtype=torch.int64))."
)
NMS_MISTAKES = (
    Mistake(
        "NMS suppresses IoU > t, strictly: an IoU of exactly t is kept.",
        lambda boxes, scores, t: box_ops.nms(boxes, scores, t - 1e-6),
    ),
    Mistake(
        "sort by score first: the boxes were visited in the order given.",
        lambda boxes, scores, t: box_ops.nms(boxes, -torch.arange(len(boxes), dtype=torch.float32), t),
    ),
    Mistake(
        "return the kept indices by decreasing score, not sorted by index.",
        lambda boxes, scores, t: box_ops.nms(boxes, scores, t).sort().values,
    ),
    Mistake(
        "return indices into the ORIGINAL boxes, not positions in the sorted order.",
        lambda boxes, scores, t: torch.where(
            torch.isin(scores.argsort(descending=True), box_ops.nms(boxes, scores, t))
        )[0],
    ),
    Mistake(
        "a suppressed box suppresses nothing: only a KEPT box removes the boxes it overlaps (dropping every box "
        "that any better box overlaps is Fast NMS, which removes too many).",
        _one_pass,
    ),
)
NMS_OPS = (
    "torchvision.ops.nms",
    "torchvision.ops.boxes.nms",
    "torch.ops.torchvision.nms",
    "torchvision.ops.batched_nms",
    "torchvision.ops.boxes.batched_nms",
)

# nms and nms_fast: one contract, its cases, hint and catalogue of mistakes
NMS_CONTRACT = dict(cases=_nms_cases, hint=NMS_HINT, mistakes=NMS_MISTAKES, torchvision_names=NMS_OPS)


@exercise(
    **NMS_CONTRACT,
    steps=(
        "Sort: the indices by decreasing score (Tensor.argsort): the order in which the boxes are visited.",
        "While that list is not empty, its first box is the best one still in play: record it as kept.",
        "The IoU of that box with every other box of the list (components.box_iou takes a box as a (1, 4) tensor).",
        "Go on with the others whose IoU is not above the threshold: a box dropped here is never visited again, "
        "so it suppresses nothing.",
        "The recorded indices as an int64 tensor (also when there are none).",
    ),
    form="the greedy loop",
)
def check_nms(nms: Callable, extra: bool = False) -> None:
    """Check your nms(boxes, scores, iou_threshold) -> Tensor[K] int64 against the reference (exact indices)."""


@exercise(
    **NMS_CONTRACT,
    steps=(
        "What the greedy loop wastes: one round of Python and small tensor operations per kept box, each on a "
        "single row of IoUs. A training step's proposals need hundreds of rounds, whose overhead outweighs the "
        "arithmetic: find a form that decides many boxes per tensor operation.",
        "Every IoU at once: with the boxes in score order, one IoU matrix compared with the threshold says which "
        "box would suppress which. Only its upper triangle counts: a box can only suppress the boxes after it.",
        "The rule in matrix form: greedy NMS keeps a box when no KEPT box before it would suppress it. Start from "
        "'every box kept' and apply the rule to every box at once: one tensor operation on the matrix and the "
        "current keep mask.",
        "One pass drops too many (a box suppressed only by a dropped box must come back): repeat the pass until "
        "the mask stops changing. It then obeys the rule for every box, so it is greedy NMS's answer exactly "
        "(Cluster-NMS, Zheng et al. 2020), usually after a few passes.",
        "The matrix grows with the square of the boxes: settle the best few hundred undecided boxes as a block, "
        "let the block's kept boxes remove every later box they overlap (one IoU of those against the rest), "
        "and go on with the next block.",
        "The kept boxes' original indices, int64, by decreasing score.",
    ),
    form="the matrix form",
    implements="nms",
)
def check_nms_fast(nms_fast: Callable, extra: bool = False) -> None:
    """Check your nms_fast(boxes, scores, iou_threshold) -> Tensor[K] int64 (exact indices), and its speed."""
