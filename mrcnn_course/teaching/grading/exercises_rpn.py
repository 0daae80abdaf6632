"""The exercises of stage 3's anchors, head, proposals and loss: cell_anchors, anchor_grid (lesson 03a),
rpn_head, filter_proposals, rpn_loss (lesson 03b). The box operations (encode/decode, IoU, NMS) are in
exercises_box_ops.py; matching and sampling, which the box head uses too, in exercises_matching.py."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_cell_anchors",
    "check_anchor_grid",
    "check_rpn_head",
    "check_filter_proposals",
    "check_rpn_loss",
]

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

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
        Case("three sizes, two ratios: ratio-major order", ((16, 40, 100), (0.5, 1.0)), extra=True),
        Case("2.5 and 10.5 round to even", ((5, 21), (1.0,)), extra=True),
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


def _head_case(
    name: str, channels: int, num_anchors: int, sizes: list[tuple[int, int]], batch: int = 1, extra: bool = False
) -> Case:
    """An RPNHead with weights large enough that every mistake shows (its init's 0.01 would hide the ReLU)."""
    head = rpn.RPNHead(channels, num_anchors)
    for parameter in head.parameters():
        parameter.data.normal_(0, 0.3)
    features = [torch.randn(batch, channels, h, w) for h, w in sizes]
    note = f"RPNHead(in_channels={channels}, num_anchors={num_anchors}): conv 3x3, cls_logits, bbox_pred"
    return Case(name, (head, features), notes={"head": note}, extra=extra)


def _head_cases() -> list[Case]:
    return [
        _head_case("one level, one image, 3 anchors on a 2 x 2 map", 4, 3, [(2, 2)]),
        _head_case("a map of 2 rows and 3 columns: row by row", 4, 3, [(2, 3)]),
        _head_case("two levels, two images: each image's anchors level after level", 4, 3, [(4, 6), (2, 3)], 2),
        _head_case("five levels like P2..P6, the last one 1 x 1", 6, 2, [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]),
        _head_case("three images, odd sizes", 5, 3, [(5, 7), (3, 4)], 3, extra=True),
        _head_case("one anchor per location", 4, 1, [(3, 5), (2, 3)], 2, extra=True),
        _head_case("five aspect ratios", 8, 5, [(4, 3), (2, 2)], extra=True),
    ]


def _logits_flattened(x):
    """(N, A, H, W) -> (N, H * W * A), as the reference."""
    return x.permute(0, 2, 3, 1).reshape(len(x), -1)


def _deltas_flattened(x, groups=(1, 4), order=(0, 3, 4, 1, 2)):
    """(N, 4A, H, W) -> (N, H * W * A, 4): the channels split into A groups of 4 (the reference) or other ways."""
    n, channels, h, w = x.shape
    split = [channels // 4 if g == 1 else 4 for g in groups]
    return x.view(n, *split, h, w).permute(*order).reshape(n, -1, 4)


def _head_with(flatten_logits=_logits_flattened, flatten_deltas=_deltas_flattened, relu=True, join=None) -> Callable:
    """rpn_head with one of the usual mistakes: another flattening of the logits (N, A, H, W) or of the deltas
    (N, 4A, H, W), no ReLU, or another way of joining the levels (lists of (N, R_l) and (N, R_l, 4))."""

    def wrong(head, features):
        objectness, pred_deltas = [], []
        for feature in features:
            t = head.conv(feature)
            t = torch.relu(t) if relu else t
            objectness.append(flatten_logits(head.cls_logits(t)))
            pred_deltas.append(flatten_deltas(head.bbox_pred(t)))
        if join:
            return join(objectness, pred_deltas)
        return torch.cat(objectness, dim=1), torch.cat(pred_deltas, dim=1)

    return wrong


def _levels_joined_across_images(objectness, pred_deltas):
    """Every level flattened over the whole batch, then cut into images: image 0 gets level 0 of every image."""
    n = len(objectness[0])
    return (
        torch.cat([o.reshape(-1) for o in objectness]).reshape(n, -1),
        torch.cat([d.reshape(-1, 4) for d in pred_deltas]).reshape(n, -1, 4),
    )


@exercise(
    cases=_head_cases,
    hint="per level: t = relu(conv(feature)); logits (N, A, H, W) -> permute(0, 2, 3, 1) -> (N, H*W*A); deltas "
    "(N, 4A, H, W) -> view (N, A, 4, H, W) -> permute(0, 3, 4, 1, 2) -> (N, H*W*A, 4); join the levels "
    "along dim 1. Don't call head(features): that is the forward you are writing.",
    steps=(
        "For each level's map: the 3x3 convolution (self.conv), then a ReLU.",
        "From that, the objectness logits (self.cls_logits) and the deltas (self.bbox_pred), and the sizes "
        "N, A, H, W from the logits' shape.",
        "The anchors are ordered location by location (row by row), then the A anchors of a location; the "
        "map holds them as channels. Move the channel dimension of the logits to the end (Tensor.permute), "
        "then flatten everything after the batch dimension.",
        "The deltas' 4A channels are A groups of 4 (anchor a's coordinate k is channel a * 4 + k): split the "
        "channel dimension into (A, 4) with Tensor.view, move the location dimensions before them, flatten "
        "to (N, H * W * A, 4).",
        "Join the levels of each image: torch.cat along dimension 1, finest level first.",
    ),
    fast="one permute and one reshape per level, one torch.cat at the end: no loop over locations or anchors",
    mistakes=(
        Mistake(
            "the logits were flattened without a permute: the anchors are location-major, so move the A "
            "channels last ((N, A, H, W) -> (N, H, W, A)) before flattening.",
            _head_with(flatten_logits=lambda x: x.reshape(len(x), -1)),
        ),
        Mistake(
            "the deltas were flattened without a permute: (N, 4A, H, W) -> (N, A, 4, H, W) -> "
            "(N, H, W, A, 4), then flatten.",
            _head_with(flatten_deltas=lambda x: x.reshape(len(x), -1, 4)),
        ),
        Mistake(
            "the deltas' channels are A groups of 4 numbers (channel a * 4 + k): view them as "
            "(N, A, 4, H, W), not (N, 4, A, H, W).",
            _head_with(flatten_deltas=lambda x: _deltas_flattened(x, groups=(4, 1), order=(0, 3, 4, 2, 1))),
        ),
        Mistake(
            "locations go row by row (x changes fastest): permute to (N, H, W, A), not (N, W, H, A).",
            _head_with(
                flatten_logits=lambda x: x.permute(0, 3, 2, 1).reshape(len(x), -1),
                flatten_deltas=lambda x: _deltas_flattened(x, order=(0, 4, 3, 1, 2)),
            ),
        ),
        Mistake("the ReLU after the 3x3 convolution is missing: relu(conv(feature)).", _head_with(relu=False)),
        Mistake(
            "the levels are joined per image (torch.cat along dimension 1): each image keeps its own anchors, "
            "level after level; the whole batch flattened at once mixes the images.",
            _head_with(join=_levels_joined_across_images),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=(
        "torchvision.models.detection.rpn.RPNHead.forward",
        "torchvision.models.detection.rpn.concat_box_prediction_layers",
        "torchvision.models.detection.rpn.permute_and_flatten",
    ),
)
def check_rpn_head(rpn_head: Callable, extra: bool = False) -> None:
    """Check your RPN head (the class, or its forward(head, features)) -> (objectness Tensor[N, R], pred_deltas
    Tensor[N, R, 4]) against the reference."""


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
        _proposal_case(
            "two images, level 1 repeats level 0: NMS keeps both",
            [8, 10, 4],
            [(64, 48), (48, 64)],
            8,
            100,
            repeat=True,
            extra=True,
        ),
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


def _loss_case(
    name: str,
    anchors: int,
    positives: list[int],
    negatives: list[int],
    spread: float = 1.0,
    extra: bool = False,
) -> Case:
    """N images of `anchors` anchors: the first positives[i] of image i are objects, the rest background or
    ignored; positives[i] and negatives[i] of them sampled (at random places)."""
    labels, sampled_pos, sampled_neg = [], [], []
    for num_pos, num_neg in zip(positives, negatives):
        order = torch.randperm(anchors)
        objects = max(num_pos, 2 * num_pos)
        labels_per_image = torch.where(torch.rand(anchors) < 0.2, -1.0, 0.0)
        labels_per_image[order[:objects]] = 1.0
        pos = torch.zeros(anchors, dtype=torch.uint8)
        pos[order[:num_pos]] = 1
        background = torch.where(labels_per_image == 0)[0]
        neg = torch.zeros(anchors, dtype=torch.uint8)
        neg[background[torch.randperm(len(background))[:num_neg]]] = 1
        labels.append(labels_per_image)
        sampled_pos.append(pos)
        sampled_neg.append(neg)
    n = len(positives)
    objectness = torch.randn(n, anchors) * 2
    pred_deltas = torch.randn(n, anchors, 4) * 0.2 * spread
    targets = [torch.randn(anchors, 4) * 0.2 * spread for _ in range(n)]
    return Case(name, (objectness, pred_deltas, labels, targets, sampled_pos, sampled_neg), extra=extra)


def _loss_cases() -> list[Case]:
    return [
        _loss_case("one image: 4 positives and 12 negatives sampled of 40 anchors", 40, [4], [12]),
        _loss_case("two images: one pool of sampled anchors, not a mean per image", 30, [6, 2], [10, 4]),
        _loss_case("an image without objects: no positives, its negatives still count", 30, [3, 0], [5, 9]),
        _loss_case("large errors: smooth L1 is linear beyond beta = 1/9", 20, [5], [5], spread=10.0),
        _loss_case("three images: 256, 130 and 256 anchors sampled", 600, [128, 30, 0], [128, 100, 256], extra=True),
        _loss_case("small errors only, two images", 50, [8, 4], [8, 20], spread=0.05, extra=True),
        _loss_case("one positive, many negatives", 80, [1], [40], extra=True),
    ]


def _loss_with(
    divide_by_positives=False,
    beta=1 / 9,
    mean_over_coordinates=False,
    box_over_all_sampled=False,
    objectness_over_labelled=False,
    per_image_mean=False,
) -> Callable:
    """rpn_loss with one of the usual mistakes (each keyword, changed, is one)."""

    def wrong(objectness, pred_deltas, labels, regression_targets, sampled_positive, sampled_negative):
        if per_image_mean:
            losses = [
                rpn.rpn_loss(o[None], d[None], [lab], [t], [p], [n])
                for o, d, lab, t, p, n in zip(
                    objectness, pred_deltas, labels, regression_targets, sampled_positive, sampled_negative
                )
            ]
            return tuple(torch.stack(parts).mean() for parts in zip(*losses))
        positive = torch.cat(sampled_positive).bool()
        sampled = positive | torch.cat(sampled_negative).bool()
        labels_all = torch.cat(labels)
        box = sampled if box_over_all_sampled else positive
        reduction = "mean" if mean_over_coordinates else "sum"
        box_loss = F.smooth_l1_loss(
            pred_deltas.reshape(-1, 4)[box], torch.cat(regression_targets)[box], beta=beta, reduction=reduction
        )
        if not mean_over_coordinates:
            box_loss = box_loss / (positive.sum() if divide_by_positives else sampled.sum())
        scored = labels_all >= 0 if objectness_over_labelled else sampled
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[scored], labels_all[scored])
        return objectness_loss, box_loss

    return wrong


@exercise(
    cases=_loss_cases,
    hint="join the images (torch.cat of the lists, objectness.flatten(), pred_deltas.reshape(-1, 4)); sampled = "
    "positive | negative masks; loss_objectness = binary_cross_entropy_with_logits over the sampled anchors "
    "(mean); loss_rpn_box_reg = smooth_l1_loss(beta=1/9, reduction='sum') over the sampled POSITIVES, "
    "divided by the number of SAMPLED anchors.",
    steps=(
        "Put the batch's images one after another: the lists with torch.cat, the logits flattened and the "
        "deltas as rows of 4, in the same order.",
        "Boolean masks of the sampled positives and of all sampled anchors (positive or negative).",
        "The objectness loss: binary cross-entropy on the logits (F.binary_cross_entropy_with_logits) of "
        "the sampled anchors against their labels, averaged over them.",
        "The box loss: smooth L1 (F.smooth_l1_loss, beta=1/9, reduction='sum') between the sampled "
        "positives' deltas and their regression targets.",
        "Divide the box loss by the number of sampled anchors, positives and negatives together.",
    ),
    fast="boolean masks over the whole batch and one call of each loss: no loop over anchors",
    mistakes=(
        Mistake(
            "the box loss is divided by the number of SAMPLED anchors (positives and negatives), not by "
            "the positives: torchvision's normalization.",
            _loss_with(divide_by_positives=True),
        ),
        Mistake("smooth L1 with beta = 1/9 (torchvision's RPN), not the default beta = 1.", _loss_with(beta=1.0)),
        Mistake(
            "the box loss is a SUM over the positives' four deltas, then divided by the sampled anchors: "
            "reduction='mean' divides by 4 x positives instead.",
            _loss_with(mean_over_coordinates=True),
        ),
        Mistake(
            "only the sampled POSITIVES have a box to regress to: the negatives are left out of the box loss.",
            _loss_with(box_over_all_sampled=True),
        ),
        Mistake(
            "the objectness loss is over the SAMPLED anchors only, not over every anchor that is not ignored.",
            _loss_with(objectness_over_labelled=True),
        ),
        Mistake(
            "the batch's sampled anchors form one pool: average over all of them at once, not per image "
            "and then over the images.",
            _loss_with(per_image_mean=True),
        ),
    ),
    atol=1e-5,
    rtol=1e-5,
    torchvision_names=("torchvision.models.detection.rpn.RegionProposalNetwork.compute_loss",),
)
def check_rpn_loss(rpn_loss: Callable, extra: bool = False) -> None:
    """Check your rpn_loss(objectness, pred_deltas, labels, regression_targets, sampled_positive,
    sampled_negative) -> (loss_objectness, loss_rpn_box_reg) against the reference."""
