"""Where RoI Align and RoI Pool read a feature map for one box: the geometry behind stage 4's pictures.

Shapes:
    H, W     the feature map's size
    PH, PW   the output grid (bins)
    Sy, Sx   sampling points per bin along y and x (RoI Align's sampling_ratio)

Coordinates are in feature-map cells, x to the right and y down, with aligned=False as in the model:
cell j's value sits at coordinate j. Divide by spatial_scale to get image pixels.

RoI Align's bilinear neighbours and weights come from roi_align.sampling_taps, the function the
package's roi_align itself uses, so a picture shows exactly what the op reads (the tests check that
summing weight x feature over the cells gives roi_align's output). RoI Pool is not part of the model;
roi_pool_cells follows torchvision's kernel (rounded corners, quantized bins, a max over each bin).

Left out: aligned=True (the half-pixel shift), several boxes or channels at once.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mrcnn_course.model import components
from mrcnn_course.model.roi_align import sampling_taps


@dataclass
class SamplingGrid:
    """RoI Align's reading of one box.

    x_edges (Tensor[PW + 1]), y_edges (Tensor[PH + 1]): the bins' edges
    points (Tensor[PH, PW, Sy * Sx, 2]): each bin's sampling points as (x, y), evenly spread inside it
    cells (Tensor[PH, PW, Sy * Sx, 4, 2] int64): the four cells (x, y) each point interpolates
    weights (Tensor[PH, PW, Sy * Sx, 4]): bilinear weight / (Sy * Sx); 0 for a point outside the map, so
        bin value = sum over points and neighbours of weights * feature[y, x]
    """

    x_edges: Tensor
    y_edges: Tensor
    points: Tensor
    cells: Tensor
    weights: Tensor


def sampling_grid(
    box: Tensor,
    output_size: tuple[int, int],
    sampling_ratio: int,
    spatial_scale: float = 1.0,
    feature_size: tuple[int, int] | None = None,
) -> SamplingGrid:
    """RoI Align's bins, sampling points and bilinear neighbours for one box (aligned=False).

    Args:
        box (Tensor[4]): x1, y1, x2, y2 in image pixels
        output_size: (PH, PW)
        sampling_ratio: points per bin along each axis; <= 0 picks ceil(box side / bins), as roi_align
        spatial_scale: feature cells per image pixel (1/4 for P2)
        feature_size: (H, W) of the map, for the neighbours and weights; None: large enough for the box
    """
    ph, pw = output_size
    x1, y1, x2, y2 = (box.detach().cpu().float() * spatial_scale).tolist()
    if feature_size is None:
        feature_size = (math.ceil(max(y2, y1 + 1)) + 2, math.ceil(max(x2, x1 + 1)) + 2)
    axes = []
    for start, end, bins, length in ((y1, y2, ph, feature_size[0]), (x1, x2, pw, feature_size[1])):
        size = max(end - start, 1.0)  # aligned=False: a box is at least one cell, as roi_align
        points = sampling_ratio if sampling_ratio > 0 else math.ceil(size / bins)
        taps, weights = sampling_taps(
            torch.tensor([start]), torch.tensor([size]), bins, torch.tensor([points]), points, length
        )  # (1, bins, 2 * points): (low, high) per point
        bin_size = size / bins
        edges = start + bin_size * torch.arange(bins + 1)
        # the points evenly spread in each bin: (bins, points)
        nominal = edges[:-1, None] + (torch.arange(points) + 0.5) * bin_size / points
        axes.append((edges, nominal, taps[0].view(bins, points, 2), weights[0].view(bins, points, 2)))
    (y_edges, y_pts, y_taps, y_w), (x_edges, x_pts, x_taps, x_w) = axes
    sy, sx = y_pts.shape[1], x_pts.shape[1]
    # every (y point, x point) pair of every (row, column) bin: (PH, PW, Sy, Sx)
    points = torch.stack(torch.broadcast_tensors(x_pts[None, :, None, :], y_pts[:, None, :, None]), dim=-1)
    # the four neighbours (y low/high) x (x low/high): (PH, PW, Sy, Sx, 2, 2)
    cell_x = x_taps[None, :, None, :, None, :].expand(ph, pw, sy, sx, 2, 2)
    cell_y = y_taps[:, None, :, None, :, None].expand(ph, pw, sy, sx, 2, 2)
    weights = y_w[:, None, :, None, :, None] * x_w[None, :, None, :, None, :]
    return SamplingGrid(
        x_edges,
        y_edges,
        points.reshape(ph, pw, sy * sx, 2),
        torch.stack([cell_x, cell_y], dim=-1).reshape(ph, pw, sy * sx, 4, 2),
        weights.reshape(ph, pw, sy * sx, 4),
    )


def round_half_away(x: float) -> int:
    """C's round(): 2.5 -> 3, -2.5 -> -3 (Python's and torch's round half to even)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def roi_pool_cells(
    box: Tensor, output_size: tuple[int, int], spatial_scale: float, feature_size: tuple[int, int]
) -> Tensor:
    """The cells each bin of RoI Pool takes the max over, as torchvision's kernel computes them.

    The box's corners are rounded to whole cells and its last cell included (+1); each bin spans
    floor(start) to ceil(end) of its share, so bins overlap or leave cells out: the quantization that
    RoI Align removes (Mask R-CNN, section 3).

    Args:
        box (Tensor[4]): x1, y1, x2, y2 in image pixels; feature_size: (H, W)
    Returns:
        Tensor[PH, PW, 4] int64: (x0, y0, x1, y1) per bin, half-open, clipped to the map; empty bins
        (x1 <= x0 or y1 <= y0) read 0
    """
    ph, pw = output_size
    x1, y1, x2, y2 = (round_half_away(v * spatial_scale) for v in box.tolist())
    ranges = []
    for start, end, bins, length in ((y1, y2, ph, feature_size[0]), (x1, x2, pw, feature_size[1])):
        bin_size = max(end - start + 1, 1) / bins
        ranges.append(
            [
                (
                    min(max(math.floor(b * bin_size) + start, 0), length),
                    min(max(math.ceil((b + 1) * bin_size) + start, 0), length),
                )
                for b in range(bins)
            ]
        )
    return torch.tensor(
        [[[x0, y0, x_end, y_end] for x0, x_end in ranges[1]] for y0, y_end in ranges[0]], dtype=torch.int64
    )


def roi_pool(feature: Tensor, cells: Tensor) -> Tensor:
    """RoI Pool of a single-channel Tensor[H, W] over roi_pool_cells' bins -> Tensor[PH, PW] (empty bins 0)."""
    out = feature.new_zeros(cells.shape[:2])
    for (i, j), (x0, y0, x1, y1) in zip(
        torch.cartesian_prod(*map(torch.arange, cells.shape[:2])).tolist(), cells.reshape(-1, 4).tolist()
    ):
        if x1 > x0 and y1 > y0:
            out[i, j] = feature[y0:y1, x0:x1].max()
    return out


@dataclass
class RoIReadings:
    """One box read from a single-channel map by RoI Align and by RoI Pool (see compare_roi_align_pool)."""

    grid: SamplingGrid  # where RoI Align reads
    align_output: Tensor  # Tensor[PH, PW], from the roi_align given
    pool_cells: Tensor  # Tensor[PH, PW, 4], roi_pool_cells
    pool_output: Tensor  # Tensor[PH, PW]


def compare_roi_align_pool(
    feature: Tensor, box: Tensor, output_size: tuple[int, int], sampling_ratio: int, roi_align: Callable | None = None
) -> RoIReadings:
    """RoI Align (`roi_align`, default the active components.roi_align; aligned=False) and RoI Pool of
    `box` (Tensor[4], in the cells of `feature`, a Tensor[H, W]; spatial_scale 1)."""
    roi_align = roi_align or components.roi_align
    if feature.dim() != 2:
        raise ValueError(
            f"expected one channel, a Tensor[H, W], got {tuple(feature.shape)}: pick a channel "
            "(feature[0]) or average them (feature.mean(0))"
        )
    feature, box = feature.detach().cpu().float(), box.detach().cpu().float()
    rois = torch.cat([torch.zeros(1), box])[None]  # (1, 5): image 0
    aligned = roi_align(feature[None, None], rois, output_size, 1.0, sampling_ratio)[0, 0]  # (PH, PW)
    size = (feature.shape[0], feature.shape[1])  # (H, W)
    cells = roi_pool_cells(box, output_size, 1.0, size)
    return RoIReadings(
        sampling_grid(box, output_size, sampling_ratio, 1.0, size),
        aligned,
        cells,
        roi_pool(feature, cells),
    )
