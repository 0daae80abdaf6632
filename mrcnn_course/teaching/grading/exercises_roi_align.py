"""The exercises of stage 4, RoI Align: interpolation_weights (a helper), roi_align and roi_align_fast,
map_levels (lesson 04).

roi_align is the natural form, from dense bilinear weights, checked for correctness; roi_align_fast writes the
same component again, fast: its speed case and its steps (ideas, one at a time) make it an exercise of its own.

interpolation_weights is not a component (the model never calls it alone): bilinear interpolation
along one axis, with RoI Align's rules at the border. Its reference is roi_align.sampling_taps, the
package's own per-axis reading, at a single point. While it is checked, that and every RoI Align are
switched off.
"""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = [
    "check_interpolation_weights",
    "check_roi_align",
    "check_roi_align_fast",
    "check_map_levels",
]

from collections.abc import Callable

import torch

from mrcnn_course.model import roi_align
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake

ROI_ALIGN_OPS = (
    "torchvision.ops.roi_align",
    "torchvision.ops.roi_align.roi_align",
    "torch.ops.torchvision.roi_align",
    "torchvision.ops.poolers.roi_align",
    "torchvision.ops.RoIAlign.forward",
)
EVERY_ROI_ALIGN = ROI_ALIGN_OPS + (
    "mrcnn_course.model.roi_align.roi_align",
    "mrcnn_course.model.components.roi_align",
    "mrcnn_course.model.torchvision_ops.roi_align",
    "mrcnn_course.model.roi_align.sampling_taps",
    "mrcnn_course.show.roi_geometry.sampling_taps",
)


def reference_interpolation_weights(coords: torch.Tensor, length: int) -> torch.Tensor:
    """Tensor[*S] of positions along an axis of `length` cells -> Tensor[*S, length]: each cell's weight
    in linear interpolation at each position, as RoI Align reads it (sampling_taps at a single point)."""
    flat = coords.reshape(-1)
    points = torch.ones(len(flat), dtype=torch.int64)
    taps, weights = roi_align.sampling_taps(flat, torch.zeros_like(flat), 1, points, 1, length)  # (P, 1, 2) each
    dense = torch.zeros(len(flat), length, dtype=coords.dtype).scatter_add_(1, taps[:, 0], weights[:, 0])
    return dense.reshape(*coords.shape, length)


def _weights_cases() -> list[Case]:
    return [
        Case("coordinates on cells: all the weight on that cell", (torch.tensor([0.0, 2.0, 4.0]), 5)),
        Case("halfway between two cells: half each", (torch.tensor([1.5]), 4)),
        Case("random coordinates along 7 cells", (torch.rand(10) * 6, 7)),
        Case("coordinates in [-1, 0) read the first cell", (torch.tensor([-0.5, -1.0, -0.25]), 5)),
        Case("the last cell and past it, up to the length", (torch.tensor([4.0, 4.5, 5.0, 3.75]), 5)),
        Case("coordinates outside [-1, length]: no weight at all", (torch.tensor([-1.5, 5.25, -3.0, 2.0]), 5)),
        Case("coordinates shaped (3, 2): weights (3, 2, length)", ((torch.rand(3, 2) * 5 - 1), 4)),
        Case("far outside, along 3 cells", (torch.tensor([-7.0, 3.01, 100.0, -1.01, 0.5]), 3), extra=True),
        Case("coordinates shaped (2, 3): weights (2, 3, length)", ((torch.rand(2, 3) * 5 - 1), 4), extra=True),
        Case("a single cell", (torch.tensor([-0.5, 0.0, 0.7, 1.0]), 1), extra=True),
        Case("100 coordinates along 9 cells", (torch.rand(100) * 12 - 1.5, 9), extra=True),
    ]


def _swapped(coords, length):
    return reference_interpolation_weights(coords.floor() + 1 - (coords - coords.floor()), length)


@exercise(
    cases=_weights_cases,
    hint="a coordinate outside [-1, length] weighs nothing; otherwise clamp it at 0 from below; low = floor, high = "
    "low + 1, except at or past the last cell (low >= length - 1): low = high = length - 1 and the coordinate "
    "= low; t = coordinate - low; weight 1 - t on cell low and t on cell high (F.one_hot(low, length) * (1 - t) "
    "+ F.one_hot(high, length) * t, with t[..., None]) -> Tensor[*S, length].",
    steps=(
        "Remember which coordinates lie outside [-1, length]: they will weigh nothing.",
        "Bring the coordinates into [0, length - 1]: one clamp gives both border rules.",
        "The low neighbour is the floor, as an integer tensor; the high one is the next cell, but never past the last.",
        "t: how far each coordinate is past its low neighbour.",
        "Rows of weights from F.one_hot of each neighbour, scaled by its weight (give the weights a "
        "trailing axis so they broadcast); then zero the rows of the coordinates of step 1.",
    ),
    mistakes=(
        Mistake(
            "a coordinate outside [-1, length] has no weight at all (RoI Align reads 0 there): only "
            "coordinates in [-1, 0) read the first cell.",
            lambda coords, length: reference_interpolation_weights(coords.clamp(-1, length), length),
        ),
        Mistake(
            "a coordinate in [-1, 0) reads the first cell (clamp it at 0), it does not weigh nothing.",
            lambda coords, length: reference_interpolation_weights(coords, length) * (coords >= 0)[..., None],
        ),
        Mistake(
            "that is nearest-neighbour: split the weight between the TWO neighbours, by how close each is.",
            lambda coords, length: reference_interpolation_weights(coords.round(), length),
        ),
        Mistake(
            "the weights are swapped: the low cell gets 1 - t (t = coordinate - low), the nearer the heavier.", _swapped
        ),
        Mistake(
            "coords may have any shape S: return Tensor[*S, length] (one row of weights per coordinate), not a "
            "flat (number of coordinates, length).",
            lambda coords, length: reference_interpolation_weights(coords, length).reshape(-1, length),
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=EVERY_ROI_ALIGN,
    reference=reference_interpolation_weights,
)
def check_interpolation_weights(interpolation_weights: Callable, extra: bool = False) -> None:
    """Check your interpolation_weights(coords, length) -> Tensor[*S, length] against RoI Align's reading."""


def _rois(image_sizes: list[tuple[int, int]], per_image: int, scale: float = 1.0) -> torch.Tensor:
    """Tensor[K, 5] of random boxes (image index, x1, y1, x2, y2) in image pixels, mostly inside the images."""
    rows = []
    for i, (h, w) in enumerate(image_sizes):
        corners = torch.rand(per_image, 2) * torch.tensor([w, h]) * 0.8
        sides = torch.rand(per_image, 2) * torch.tensor([w, h]) * 0.5 + 0.5
        rows.append(torch.cat([torch.full((per_image, 1), float(i)), corners, corners + sides], dim=1))
    return torch.cat(rows) / torch.tensor([1, scale, scale, scale, scale])


def _roi_align_cases() -> list[Case]:
    two_maps = torch.randn(2, 4, 16, 16)
    p3_boxes = _rois([(16, 16), (16, 16)], 3, scale=1 / 8)  # boxes in pixels of a 128-px image
    masks = (torch.rand(3, 1, 20, 24) > 0.5).float()
    mask_rois = torch.tensor([[0, 2.0, 3, 18, 15], [1, 0, 0, 24, 20], [2, 5.5, 4.2, 9.1, 7.7], [0, 10, 1, 12, 19]])
    return [
        Case(
            "one box, 2x2 bins, 2x2 points each",
            (torch.randn(1, 1, 8, 10), torch.tensor([[0, 1.3, 1.6, 6.8, 5.4]]), 2, 1.0, 2, False),
        ),
        Case("the box pooler: 7x7 from P3 (spatial_scale 1/8), two images", (two_maps, p3_boxes, 7, 0.125, 2, False)),
        Case("aligned=True: the half-pixel shift", (two_maps, p3_boxes, 7, 0.125, 2, True)),
        Case(
            "boxes partly outside the map",
            (
                two_maps,
                torch.tensor([[0, -3.0, -2, 6, 5], [1, 10, 12, 19.5, 22], [1, -1.5, 3, 17, 9]]),
                3,
                1.0,
                2,
                False,
            ),
        ),
        Case("no boxes", (two_maps, torch.zeros(0, 5), 7, 0.25, 2, False)),
        Case("output_size (PH, PW) = (2, 3): not square", (two_maps, p3_boxes[:3], (2, 3), 0.125, 2, False)),
        Case("mask targets: 28x28, adaptive sampling (sampling_ratio -1)", (masks, mask_rois, 28, 1.0, -1, False)),
        Case(
            "tiny and zero-area boxes: at least one cell",
            (two_maps, torch.tensor([[0, 4.2, 4.3, 4.4, 4.9], [1, 7.0, 3, 7, 10], [0, 5, 5, 5, 5]]), 2, 1.0, 2, False),
            extra=True,
        ),
        Case("a non-square output (4, 6)", (two_maps, p3_boxes, (4, 6), 0.125, 1, False), extra=True),
        Case(
            "the mask pooler: 14x14 from P2 (1/4), three images",
            (torch.randn(3, 2, 12, 20), _rois([(48, 80)] * 3, 10), 14, 0.25, 2, False),
            extra=True,
        ),
        Case(
            "aligned=True with adaptive sampling",
            (torch.randn(1, 3, 23, 31), _rois([(23, 31)], 6), 5, 1.0, -1, True),
            extra=True,
        ),
        Case(
            "a box entirely outside the map reads 0",
            (two_maps, torch.tensor([[0, 20.0, 20, 30, 30]]), 2, 1.0, 2, False),
            extra=True,
        ),
    ]


def _points_at_bin_corners(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """What placing the points at i * bin / grid (not (i + 0.5) * bin / grid) gives: the box shifted back."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    sizes = boxes[:, 3:5] - boxes[:, 1:3]  # (K, 2): w, h in pixels
    cells = sizes * spatial_scale if aligned else (sizes * spatial_scale).clamp(min=1.0)
    bins = cells / torch.tensor([pw, ph])
    grid = torch.full_like(bins, sampling_ratio) if sampling_ratio > 0 else torch.ceil(bins).clamp(min=1)
    shift = 0.5 * bins / grid / spatial_scale  # (K, 2), in pixels
    moved = boxes.clone()
    moved[:, 1:3] -= shift
    moved[:, 3:5] -= shift
    return roi_align.roi_align(input, moved, output_size, spatial_scale, sampling_ratio, aligned)


def _unclamped(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    """aligned=False without the clamp: what aligned=True reads from boxes shifted by half a cell."""
    if aligned:
        raise ValueError("applies to aligned=False only")
    half_cell = torch.tensor([0, 0.5, 0.5, 0.5, 0.5]) / spatial_scale
    return roi_align.roi_align(input, boxes + half_cell, output_size, spatial_scale, sampling_ratio, True)


def _summed_not_averaged(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    if sampling_ratio <= 0:
        raise ValueError("applies to a fixed sampling ratio only")
    return roi_align.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned) * sampling_ratio**2


def _every_box_from_image_0(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    if not bool((boxes[:, 0] != 0).any()):
        raise ValueError("applies to boxes of several images only")
    first_image = boxes.clone()
    first_image[:, 0] = 0
    return roi_align.roi_align(input, first_image, output_size, spatial_scale, sampling_ratio, aligned)


ROI_ALIGN_HINT = (
    "per box: corners * spatial_scale, minus 0.5 if aligned; width and height clamped at 1 if not aligned; bin = "
    "size / bins; points per bin per axis: sampling_ratio, or ceil(size / bins) when it is <= 0; point i of bin b at "
    "start + b * bin + (i + 0.5) * bin / points; a bin is the MEAN of its points' bilinear readings, from the box's "
    "own image (column 0 of boxes); return Tensor[K, C, PH, PW]."
)
ROI_ALIGN_MISTAKES = (
    Mistake(
        "spatial_scale was not applied: box corners are in image pixels; multiply them by spatial_scale "
        "to get feature-map cells.",
        lambda input, boxes, out, scale, ratio, aligned: roi_align.roi_align(input, boxes, out, 1.0, ratio, aligned),
    ),
    Mistake(
        "aligned=True shifts the corners by -0.5 cell (after scaling) and does not clamp the size at 1.",
        lambda input, boxes, out, scale, ratio, aligned: roi_align.roi_align(input, boxes, out, scale, ratio, False),
    ),
    Mistake("with aligned=False a box is at least one cell wide and high: clamp its size at 1.", _unclamped),
    Mistake(
        "the points sit at the bins' corners: spread them inside, at (i + 0.5) * bin / points.",
        _points_at_bin_corners,
    ),
    Mistake("each output is the average of its points: divide the sum by the number of points.", _summed_not_averaged),
    Mistake(
        "output_size (PH, PW) is (height, width): PH bins down the rows, PW across the columns.",
        lambda input, boxes, out, scale, ratio, aligned: roi_align.roi_align(
            input, boxes, out[::-1], scale, ratio, aligned
        ),
    ),
    Mistake(
        "each box reads its own image: column 0 of boxes is the image's index in input (every box read image 0).",
        _every_box_from_image_0,
    ),
)

# roi_align and roi_align_fast: one contract, its cases, hint and catalogue of mistakes
ROI_ALIGN_CONTRACT = dict(
    cases=_roi_align_cases,
    hint=ROI_ALIGN_HINT,
    mistakes=ROI_ALIGN_MISTAKES,
    atol=1e-5,
    rtol=1e-4,
    torchvision_names=ROI_ALIGN_OPS,
)


@exercise(
    **ROI_ALIGN_CONTRACT,
    steps=(
        "PH and PW from output_size; the zero output Tensor[K, C, PH, PW]; with no boxes, return it.",
        "The corners in cells (scaled, and shifted if aligned); each box's width and height (clamped "
        "unless aligned) and the size of one of its bins.",
        "The number of points per bin along each axis: one number per box.",
        "A helper for one axis: every box's bin weights, Tensor[K, bins, length]. Compute the coordinates "
        "of all points of all bins at once (broadcast a box axis, a bin axis and a point axis), take their "
        "interpolation_weights, and average over each bin's points. Boxes may have different numbers of "
        "points: make room for the most and weigh the extra ones 0.",
        "The helper gives the rows (along H) and the columns (along W).",
        "A box's output is rows @ its image's map @ columns transposed, for every channel: torch.einsum writes "
        "it for many boxes at once (take each box's map by its image index, column 0 of boxes).",
    ),
    form="dense bilinear weights",
)
def check_roi_align(roi_align: Callable, extra: bool = False) -> None:
    """Check your roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned).

    It returns Tensor[K, C, PH, PW]."""


@exercise(
    **ROI_ALIGN_CONTRACT,
    steps=(
        "What the dense form wastes: a bin's row weights are 0 except on the few rows its points fall between "
        "(two per point at most), and so are its column weights; rows @ map @ columns multiplies mostly zeros "
        "and reads the whole map for every box. Find a form that touches only the cells a bin reads.",
        "Keep only the taps that weigh something: for every bin, the few rows and the few columns with a weight, "
        "with their weights (Tensor.topk on the weights keeps the same number for every bin; the weights it "
        "adds are 0).",
        "Each (row, column) pair of a bin is one cell of the maps, weighing row weight x column weight. Laid "
        "out channels last, the maps are a table with one row of C numbers per cell (image, y, x): give every "
        "pair the number of its row in that table.",
        "A bin is then a weighted sum of a few rows of that table: F.embedding_bag (per_sample_weights, "
        "mode 'sum') gathers and sums them in one pass, for every bin of every box at once, without building "
        "the gathered tensor of all taps.",
        "The sums come out one row per bin: reshape and permute them to (K, C, PH, PW).",
    ),
    form="only the cells each bin reads",
    implements="roi_align",
)
def check_roi_align_fast(roi_align_fast: Callable, extra: bool = False) -> None:
    """Check your roi_align_fast(input, boxes, output_size, spatial_scale, sampling_ratio, aligned), and its speed.

    It returns Tensor[K, C, PH, PW]."""


def _squares(*sides: float) -> torch.Tensor:
    side = torch.tensor(sides, dtype=torch.float32)
    return torch.stack([torch.zeros_like(side), torch.zeros_like(side), side, side], dim=1)


def _map_levels_cases() -> list[Case]:
    return [
        Case("a 224 x 224 box reads P4", ([_squares(224)], 2, 5)),
        Case("each side of every level's edge", ([_squares(111.9, 112, 223.9, 224, 447, 448)], 2, 5)),
        Case("tiny boxes read P2, huge ones P5: clamped", ([_squares(1, 10, 1000, 3000)], 2, 5)),
        Case(
            "sqrt(w * h) = 224 up to float error: + eps before the floor",
            ([torch.tensor([[39.09025573730469, 19.545127868652344, 324.69287109375, 195.22976684570312]])], 2, 5),
        ),
        Case(
            "two images, boxes not square",
            ([torch.tensor([[0.0, 0, 50, 200], [10, 10, 20, 30]]), torch.tensor([[5.0, 5, 405, 105]])], 2, 5),
        ),
        Case("no boxes", ([torch.zeros(0, 4)], 2, 5), extra=True),
        Case(
            "boxes at an edge up to float error, another eps",
            ([torch.tensor([[49.503997802734375, 24.751998901367188, 592.25927734375, 117.19880676269531]])], 2, 5)
            + (224, 4, 1e-5),
            extra=True,
        ),
        Case(
            "the small model's scale: canonical 56 px at level 4",
            ([_squares(7, 14, 28, 55.9, 56, 112, 224)], 2, 5, 56, 4),
            extra=True,
        ),
        Case(
            "levels 3 to 6, canonical level 5",
            ([torch.rand(20, 2).repeat(1, 2) * torch.tensor([0, 0, 1, 1]) * 900], 3, 6, 224, 5),
            extra=True,
        ),
    ]


def _levels_rounded(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    scale = torch.sqrt(torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]))
    levels = torch.round(canonical_level + torch.log2(scale / canonical_scale))
    return levels.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def _levels_by_width(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    widths = [b[:, 2] - b[:, 0] for b in boxes]
    return roi_align.map_levels(
        [_squares(*w.tolist()) if len(w) else torch.zeros(0, 4) for w in widths],
        k_min,
        k_max,
        canonical_scale,
        canonical_level,
        eps,
    )


def _levels_unclamped(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    return roi_align.map_levels(boxes, -100, 100, canonical_scale, canonical_level, eps) - 100 - k_min


@exercise(
    cases=_map_levels_cases,
    hint="k = floor(canonical_level + log2(sqrt(w * h) / canonical_scale) + eps) for every box of every image "
    "(concatenated, image after image), clamped to [k_min, k_max]; return k - k_min as int64 (an index into "
    "the pooled levels P{k_min}..P{k_max}).",
    steps=(
        "Join every image's boxes into one tensor.",
        "Each box's scale: the side of the square of the same area.",
        "Apply the formula of the docstring (torch.log2, torch.floor).",
        "Clamp, make it int64, and subtract k_min.",
    ),
    mistakes=(
        Mistake(
            "return k - k_min, an index into the pooled maps (0 for P{k_min}), not the level k itself.",
            lambda boxes, k_min, k_max, *rest: roi_align.map_levels(boxes, k_min, k_max, *rest) + k_min,
        ),
        Mistake("clamp the level to [k_min, k_max]: a 1-px box still reads the finest map.", _levels_unclamped),
        Mistake("floor, not round: a box reads the level at or below its scale.", _levels_rounded),
        Mistake("the scale is sqrt(w * h), the side of a square of the same area, not the width.", _levels_by_width),
        Mistake(
            "add eps before the floor: sqrt(w * h) / canonical_scale a hair under a power of 2 (float error) "
            "would drop the box a level.",
            lambda boxes, k_min, k_max, scale=224, level=4, eps=1e-6: roi_align.map_levels(
                boxes, k_min, k_max, scale, level, 0.0
            ),
        ),
    ),
    torchvision_names=("torchvision.ops.poolers.LevelMapper.__call__", "torchvision.ops.poolers.initLevelMapper"),
)
def check_map_levels(map_levels: Callable, extra: bool = False) -> None:
    """Check your map_levels(boxes, k_min, k_max, canonical_scale, canonical_level, eps) -> Tensor[K] int64."""
