"""The exercises of stage 3's anchors and proposals: cell_anchors, anchor_grid, filter_proposals (lesson 03).
The box operations (encode/decode, IoU, NMS) are in exercises_box_ops.py."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_cell_anchors",
    "check_anchor_grid",
    "check_filter_proposals",
]

import inspect
import math
from collections.abc import Callable

import torch

from mrcnn_course.model import components, rpn
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake

ANCHOR_GENERATOR = "torchvision.models.detection.anchor_utils.AnchorGenerator"


def _cell_cases() -> list[Case]:
    return [
        Case("one size, three aspect ratios (one FPN level)", ((32,), (0.5, 1.0, 2.0))),
        Case("two sizes, two ratios: ratio-major order", ((16, 64), (0.5, 2.0))),
        Case("half a pixel rounds to even", ((45,), (1.0,))),
        Case("tall and wide: ratios 4 and 1/4", ((8,), (0.25, 4.0)), extra=True),
        Case("three sizes, one ratio", ((10, 20, 30), (1.0,)), extra=True),
    ]


def _unrounded(sizes, aspect_ratios) -> torch.Tensor:
    h_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float32))
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    widths = (scales[None, :] / h_ratios[:, None]).reshape(-1)
    heights = (scales[None, :] * h_ratios[:, None]).reshape(-1)
    return torch.stack([-widths, -heights, widths, heights], dim=1) / 2


@exercise(
    cases=_cell_cases,
    hint="aspect ratio = height / width and the area stays size^2: h = size * sqrt(r), w = size / sqrt(r); "
    "each anchor is (-w/2, -h/2, w/2, h/2), rounded with torch.round; order: for each ratio, every size; "
    "return Tensor[A, 4] float32.",
    steps=(
        "Turn the sizes and the ratios into float32 tensors.",
        "From each ratio, the factor for the height (its square root) and for the width (one over it).",
        "Every (ratio, size) pair at once: a column of factors times a row of sizes (broadcasting), "
        "flattened so that the ratio changes slowest.",
        "From the widths and heights, the four corners of a box centred on the origin, one row per anchor.",
        "Round.",
    ),
    mistakes=(
        Mistake(
            "the aspect ratio is height / width (r = 2 is a tall box), not width / height.",
            lambda sizes, ratios: rpn.cell_anchors(sizes, tuple(1 / r for r in ratios)),
        ),
        Mistake("the corners are rounded to whole pixels: torch.round(anchors).", _unrounded),
        Mistake(
            "torch.round rounds half to even (22.5 -> 22), like torchvision: not floor(x + 0.5).",
            lambda sizes, ratios: torch.floor(_unrounded(sizes, ratios) + 0.5),
        ),
        Mistake(
            "the order is ratio-major: for each ratio, every size (not for each size, every ratio).",
            lambda sizes, ratios: torch.cat([rpn.cell_anchors((s,), ratios) for s in sizes]),
        ),
        Mistake(
            "the anchors are centred on (0, 0): (-w/2, -h/2, w/2, h/2), not (0, 0, w, h).",
            lambda sizes, ratios: (lambda a: a - a[:, :2].repeat(1, 2))(rpn.cell_anchors(sizes, ratios)),
        ),
    ),
    torchvision_names=(f"{ANCHOR_GENERATOR}.generate_anchors",),
)
def check_cell_anchors(cell_anchors: Callable, extra: bool = False) -> None:
    """Check your cell_anchors(sizes, aspect_ratios) -> Tensor[A, 4] against the reference (exactly)."""


def _grid_cases() -> list[Case]:
    three = rpn.cell_anchors((32,), (0.5, 1.0, 2.0))
    return [
        Case("2 x 3 grid, stride 16, three anchors", (three, (2, 3), (16, 16))),
        Case("different strides in y and x", (three, (3, 2), (8, 4))),
        Case(
            "stride 61 (the pool level of an 800-px image)",
            (rpn.cell_anchors((512,), (0.5, 1.0, 2.0)), (2, 2), (61, 61)),
        ),
        Case("one location", (three, (1, 1), (32, 32))),
        Case("a tall grid, one anchor", (rpn.cell_anchors((16,), (1.0,)), (5, 1), (16, 32)), extra=True),
        Case("a 13 x 13 grid", (three, (13, 13), (61, 61)), extra=True),
    ]


def _locations_first(cell, grid_size, stride, order=(1, 0, 2, 3)):
    grid = rpn.anchor_grid(cell, grid_size, stride).reshape(grid_size[0], grid_size[1], len(cell), 4)
    return grid.permute(*order).reshape(-1, 4)


@exercise(
    cases=_grid_cases,
    hint="location (i, j) (row i, column j) is centred on x = j * stride_x, y = i * stride_y, with no "
    "half-stride offset; add the shift (x, y, x, y) to every cell anchor; order: row by row, then "
    "column, then the A anchors of the location; grid_size is (H, W) and stride (stride_y, stride_x).",
    steps=(
        "The x of every column and the y of every row: torch.arange of the grid's size, times the stride.",
        "Every (y, x) location with torch.meshgrid (indexing='ij'), both flattened: row by row.",
        "One shift per location, (x, y, x, y): a Tensor[H * W, 4].",
        "Every cell anchor on every location: add a (locations, 1, 4) view of the shifts to a (1, A, 4) view "
        "of the cell anchors, then flatten to rows of 4.",
    ),
    mistakes=(
        Mistake(
            "there is no half-stride offset: location (i, j) is centred on (j * stride_x, i * stride_y).",
            lambda cell, grid, stride: (
                rpn.anchor_grid(cell, grid, stride) + torch.tensor([stride[1], stride[0]] * 2) / 2
            ),
        ),
        Mistake(
            "the order is location-major: all A anchors of location 0, then of location 1, ...",
            lambda cell, grid, stride: (
                rpn.anchor_grid(cell, grid, stride).reshape(-1, len(cell), 4).transpose(0, 1).reshape(-1, 4)
            ),
        ),
        Mistake(
            "locations go row by row (x changes fastest), not column by column.",
            lambda cell, grid, stride: _locations_first(cell, grid, stride),
        ),
        Mistake(
            "x and y are swapped: grid_size is (H, W) and stride (stride_y, stride_x); x = j * stride_x.",
            lambda cell, grid, stride: rpn.anchor_grid(cell, grid, stride[::-1]),
        ),
    ),
    torchvision_names=(f"{ANCHOR_GENERATOR}.grid_anchors", f"{ANCHOR_GENERATOR}.forward"),
)
def check_anchor_grid(anchor_grid: Callable, extra: bool = False) -> None:
    """Check your anchor_grid(cell, grid_size, stride) -> Tensor[H * W * A, 4] against the reference (exactly)."""


def _proposal_case(
    name: str,
    levels: list[int],
    image_sizes: list[tuple[int, int]],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float = 0.7,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
    spill: float = 0.1,
    tiny: int = 0,
    repeat: bool = False,
    at_thresh: int = 0,
    extra: bool = False,
) -> Case:
    """Random decoded anchors: `spill` of the image size may lie outside it; the first `tiny` have no width;
    with `repeat`, level 1 starts with level 0's boxes shifted by half a pixel (NMS must keep both); the
    last `at_thresh` anchors of level 0 get the logit whose probability is exactly score_thresh."""
    num_images, total = len(image_sizes), sum(levels)
    side = max(max(size) for size in image_sizes)
    corners = torch.rand(num_images, total, 2) * side * (1 + 2 * spill) - side * spill
    proposals = torch.cat([corners, corners + torch.rand(num_images, total, 2) * side * 0.4 + 0.5], dim=2)
    proposals[:, :tiny, 2] = proposals[:, :tiny, 0]
    if repeat:
        count = min(levels[0], levels[1])
        proposals[:, levels[0] : levels[0] + count] = proposals[:, :count] + 0.5
    objectness = torch.randn(num_images, total) * 2
    if at_thresh:
        objectness[:, levels[0] - at_thresh : levels[0]] = torch.logit(torch.tensor(score_thresh))
    args = (
        proposals,
        objectness,
        image_sizes,
        levels,
        pre_nms_top_n,
        post_nms_top_n,
        nms_thresh,
        min_size,
        score_thresh,
    )
    return Case(name, args, extra=extra)


def _proposal_cases() -> list[Case]:
    return [
        _proposal_case("one image, two levels: the best per level", [10, 5], [(64, 64)], 4, 100),
        _proposal_case("boxes outside the image are clipped", [8], [(32, 32)], 8, 100, spill=0.5),
        _proposal_case("boxes without width are dropped", [8, 4], [(64, 64)], 6, 100, tiny=3),
        _proposal_case("two images of different sizes", [12, 6, 3], [(64, 48), (40, 64)], 5, 8),
        _proposal_case("post_nms_top_n keeps the best", [20, 10], [(64, 64)], 20, 3, nms_thresh=0.5),
        _proposal_case("a level with fewer anchors than pre_nms_top_n", [3, 20], [(64, 64)], 5, 100),
        _proposal_case("the same boxes on two levels: NMS keeps both", [6, 6], [(64, 64)], 6, 100, repeat=True),
        _proposal_case(
            "score_thresh 0.5 drops lower scores, keeps equal ones",
            [10, 8],
            [(64, 64)],
            10,
            100,
            score_thresh=0.5,
            at_thresh=3,
        ),
        _proposal_case("score_thresh drops low scores", [10, 10], [(64, 64)], 10, 100, score_thresh=0.6, extra=True),
        _proposal_case(
            "scores equal to score_thresh 0.5, two images",
            [12, 6],
            [(64, 48), (48, 64)],
            8,
            100,
            score_thresh=0.5,
            at_thresh=4,
            extra=True,
        ),
        _proposal_case("no box survives: all without width", [5, 3], [(64, 64)], 5, 100, tiny=8, extra=True),
        _proposal_case("many overlapping anchors", [200, 50, 12], [(128, 96), (96, 128)], 100, 50, extra=True),
        _proposal_case("min_size 4", [30, 10], [(64, 64)], 20, 100, min_size=4.0, extra=True),
    ]


def _nms_across_levels(*args):
    def nms_ignoring_levels(boxes, scores, idxs, iou_threshold):
        return components.nms(boxes, scores, iou_threshold)

    with components.using(batched_nms=nms_ignoring_levels):
        return rpn.filter_proposals(*args)


def _next_float32(value: float) -> float:
    """The next float32 above `value`: a threshold that drops what equals `value` and keeps what is above."""
    return torch.nextafter(torch.tensor(value), torch.tensor(math.inf)).item()


def _reference_with(**changes):
    """The reference with some arguments changed (name=function of the old value): what leaving out a step gives."""
    names = list(inspect.signature(rpn.filter_proposals).parameters)

    def wrong(*args):
        arguments = dict(zip(names, args))
        arguments.update({key: change(arguments[key]) for key, change in changes.items()})
        return rpn.filter_proposals(**arguments)

    return wrong


@exercise(
    cases=_proposal_cases,
    hint="1. per level (objectness.split(num_anchors_per_level, dim=1)), the top pre_nms_top_n logits (topk), "
    "indices offset into all R anchors; 2. scores = sigmoid of those logits; then per image: 3. clip to "
    "(H, W) (components.clip_boxes_to_image); 4. drop boxes with a side < min_size "
    "(components.remove_small_boxes) and scores < score_thresh; 5. NMS per level "
    "(components.batched_nms(boxes, scores, levels, nms_thresh)); 6. keep the first post_nms_top_n.",
    steps=(
        "Give objectness the shape (N, R), and make a tensor that says which level each of the R anchors "
        "is on (torch.full per level, concatenated).",
        "Split the logits level by level (Tensor.split); in each, the indices of its best logits "
        "(Tensor.topk, at most the level's size), shifted by where the level starts in R; join them.",
        "For each image: its chosen boxes, logits and levels; probabilities from the logits; the boxes "
        "clipped to the image (components.clip_boxes_to_image).",
        "Keep the indices that components.remove_small_boxes returns, and of those the ones whose score "
        "is at least score_thresh.",
        "components.batched_nms with the levels as its groups; the first post_nms_top_n of its answer.",
    ),
    fast="topk per level on the whole batch at once, one components.batched_nms per image; no "
    "Python loop over boxes or anchors",
    mistakes=(
        Mistake(
            "the scores are probabilities: apply torch.sigmoid to the logits.",
            lambda *args: (lambda out: (out[0], [torch.logit(s) for s in out[1]]))(rpn.filter_proposals(*args)),
        ),
        Mistake(
            "top-k is per level, not over all anchors at once: the fine levels would crowd out the coarse ones.",
            _reference_with(num_anchors_per_level=lambda levels: [sum(levels)]),
        ),
        Mistake(
            "NMS runs within each level (batched_nms with each box's level), not across levels.", _nms_across_levels
        ),
        Mistake(
            "the boxes were not clipped to the image (components.clip_boxes_to_image).",
            _reference_with(image_sizes=lambda sizes: [(10**6, 10**6)] * len(sizes)),
        ),
        Mistake(
            "boxes with a side below min_size must be dropped (components.remove_small_boxes).",
            _reference_with(min_size=lambda _: -math.inf),
        ),
        Mistake(
            "only the first post_nms_top_n proposals of each image are kept.",
            _reference_with(post_nms_top_n=lambda _: 10**9),
        ),
        Mistake(
            "scores below score_thresh must be dropped (after the sigmoid): keep scores >= score_thresh.",
            _reference_with(score_thresh=lambda _: -math.inf),
        ),
        Mistake(
            "a score EQUAL to score_thresh is kept: drop scores < score_thresh, keep those >= it.",
            _reference_with(score_thresh=lambda t: _next_float32(t)),
        ),
    ),
    atol=1e-4,
    rtol=1e-5,
    torchvision_names=("torchvision.models.detection.rpn.RegionProposalNetwork.filter_proposals",),
)
def check_filter_proposals(filter_proposals: Callable, extra: bool = False) -> None:
    """Check your filter_proposals(...) -> (boxes per image, scores per image) against the reference."""
