"""Stage 4, RoI Align: a fixed-size feature grid for every box, from the FPN level that fits it.

Shapes:
    N          images;  C channels (256 in R-50-FPN);  H, W a feature map's size
    K          RoIs (boxes) in the whole batch
    PH, PW     the output grid: 7x7 for the box head, 14x14 for the mask head
    S          sampling points per bin along one axis (sampling_ratio; 2 in the model)

For 1000 proposals: 1000x256x7x7 for the box head; for N detections: Nx256x14x14 for the mask head.

Each output bin averages S x S points spread evenly inside it, and each point is read from the
feature map by bilinear interpolation of its four neighbours (Mask R-CNN, section 3, Fig. 3): no
coordinate is ever rounded, unlike RoI Pool, so a box shifted by a fraction of a cell gives a
different, not the same, feature.

Gotchas, as torchvision's kernel does them: aligned=False (what the model uses) maps box corners to
the map without the half-pixel shift (aligned=True subtracts 0.5: pixel centres are at +0.5); with
aligned=False a box is at least 1 cell wide; points outside [-1, H] x [-1, W] read zero, points in
[-1, 0] read the border; sampling_ratio <= 0 picks ceil(box size / output size) points per bin, box by box.

Left out: rotated RoI Align, position-sensitive RoI Align, RoI Pool (lesson 04 shows it).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.box_ops import box_area

# Bound the index tensors built per chunk of boxes (int64 + float32 each), about 250 MB.
MAX_TAPS_PER_CHUNK = 20_000_000


def to_roi_format(boxes: Tensor | list[Tensor]) -> Tensor:
    """A list of N Tensor[K_i, 4] -> Tensor[K, 5] of (image index, x1, y1, x2, y2); a Tensor[K, 5] passes."""
    if isinstance(boxes, Tensor):
        return boxes
    concat = torch.cat(boxes, dim=0)
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)  # (K, 1)
    return torch.cat([ids, concat], dim=1)


def sampling_taps(
    start: Tensor, size: Tensor, bins: int, grid: Tensor, max_grid: int, length: int
) -> tuple[Tensor, Tensor]:
    """Where, along one axis, each bin reads the feature map, and with what weight.

    Args:
        start, size (Tensor[K]): the RoI's first coordinate and extent, in feature-map cells
        bins: output bins along this axis (PH or PW)
        grid (Tensor[K]): sampling points per bin for each RoI; max_grid = grid.max()
        length: the feature map's extent along this axis (H or W)
    Returns:
        taps (Tensor[K, bins, 2 * max_grid] int64): the cell indices each bin reads (2 per point)
        weights (Tensor[K, bins, 2 * max_grid]): linear-interpolation weight x validity / grid, so
        a bin's value along this axis is sum(weights * feature[taps]); padded points weigh 0
    """
    k = start.shape[0]
    bin_size = size / bins  # (K,)
    b = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None]  # (1, bins, 1)
    i = torch.arange(max_grid, dtype=start.dtype, device=start.device)[None, None, :]  # (1, 1, G)
    grid_f = grid.clamp(min=1).to(start.dtype)[:, None, None]  # (K, 1, 1); an empty grid reads nothing
    # The same expression, in the same order, as torchvision's kernel: start + bin offset + point offset.
    pos = start[:, None, None] + b * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / grid_f
    valid = (pos >= -1.0) & (pos <= length) & (i < grid[:, None, None])  # (K, bins, G): outside reads 0
    pos = pos.clamp(min=0)  # points in [-1, 0] read the border
    low = pos.floor()
    at_end = low >= length - 1  # the last cell has no right neighbour: read it alone
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    pos = torch.where(at_end, low, pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low
    weight = valid.to(start.dtype) / grid_f  # the bin's average
    taps = torch.stack([low, high], dim=-1).long().reshape(k, bins, 2 * max_grid)
    weights = torch.stack([(1 - frac) * weight, frac * weight], dim=-1).reshape(k, bins, 2 * max_grid)
    return taps, weights


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align, vectorized over all boxes and bins (no Python loop over boxes).

    Args:
        input (Tensor[N, C, H, W]): feature maps
        boxes (Tensor[K, 5] as (image index, x1, y1, x2, y2), or a list of N Tensor[K_i, 4]): in image pixels
        output_size: (PH, PW) or one int for both
        spatial_scale: feature cells per image pixel (1/4 for P2)
        sampling_ratio: points per bin along each axis; <= 0 picks ceil(box size / output size) per box
        aligned: shift by half a pixel so that pixel centres line up (Detectron2's correction)
    Returns:
        Tensor[K, C, PH, PW]

    Bilinear interpolation and the average over a bin are both weighted sums of cells, separable in y
    and x; each bin is one weighted sum over (2S)^2 cells. F.embedding_bag does the gather and the
    weighted sum in one pass over a channels-last copy of the map, so no (K, C, PH, PW, S, S)
    intermediate is ever built.
    """
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    rois = to_roi_format(boxes)
    num_images, channels, height, width = input.shape
    if rois.shape[0] == 0:
        return input.new_zeros((0, channels, ph, pw))
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # torchvision's legacy behaviour: a box is at least one cell
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / ph).long(), torch.ceil(roi_w / pw).long()
    max_gh, max_gw = max(int(grid_h.max()), 1), max(int(grid_w.max()), 1)

    # channels last, contiguous: each cell's C values are one row that embedding_bag reads at once
    flat = input.permute(0, 2, 3, 1).contiguous().view(num_images * height * width, channels)
    image_index = rois[:, 0].long()
    taps_per_box = ph * pw * 4 * max_gh * max_gw
    chunk = max(1, MAX_TAPS_PER_CHUNK // taps_per_box)
    outputs = []
    for s in range(0, rois.shape[0], chunk):
        part = slice(s, s + chunk)
        ty, wy = sampling_taps(y1[part], roi_h[part], ph, grid_h[part], max_gh, height)  # (k, PH, 2G)
        tx, wx = sampling_taps(x1[part], roi_w[part], pw, grid_w[part], max_gw, width)  # (k, PW, 2G)
        k = ty.shape[0]
        base = image_index[part].view(k, 1, 1, 1, 1) * (height * width)
        # every (y tap, x tap) pair of every bin: (k, PH, PW, 2Gh, 2Gw)
        index = base + ty[:, :, None, :, None] * width + tx[:, None, :, None, :]
        weight = wy[:, :, None, :, None] * wx[:, None, :, None, :]
        bags = F.embedding_bag(
            index.reshape(k * ph * pw, -1),
            flat,
            per_sample_weights=weight.reshape(k * ph * pw, -1).to(flat.dtype),
            mode="sum",
        )  # (k * PH * PW, C)
        outputs.append(bags.view(k, ph, pw, channels).permute(0, 3, 1, 2))  # (k, C, PH, PW)
    return torch.cat(outputs).contiguous()


def map_levels(
    boxes: list[Tensor], k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4, eps: float = 1e-6
) -> Tensor:
    """Which FPN level each box is pooled from (FPN paper, Eqn. 1).

    k = floor(k0 + log2(sqrt(w * h) / 224)), clamped to [k_min, k_max]: a 224x224 box (ImageNet's
    size) reads P4, one half as wide P3, twice as wide P5.

    Args:
        boxes: N Tensor[K_i, 4] in image pixels
    Returns:
        Tensor[K] int64: level - k_min, an index into the list of pooled maps
    """
    scale = torch.sqrt(torch.cat([box_area(b) for b in boxes]))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale) + torch.tensor(eps, dtype=scale.dtype))
    return levels.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def infer_scale(feature: Tensor, image_size: tuple[int, int]) -> float:
    """The power of 2 closest to feature height / image height (1/4 for P2, 1/32 for P5)."""
    approx = feature.shape[-2] / image_size[0]
    return 2.0 ** round(math.log2(approx))


class MultiScaleRoIAlign(nn.Module):
    """RoI Align over several FPN levels, each box from the level map_levels gives it.

    The scales of the levels are inferred from the first batch's feature and image sizes (as
    torchvision does) and kept.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        self.featmap_names = featmap_names
        self.output_size = (
            (output_size, output_size) if isinstance(output_size, int) else (output_size[0], output_size[1])
        )
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.scales: list[float] | None = None

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """features: maps by name; boxes: N Tensor[K_i, 4]; image_sizes: the resized (unpadded) sizes.
        Returns Tensor[K, C, PH, PW] in the order of the concatenated boxes."""
        maps = [features[name] for name in self.featmap_names]
        if self.scales is None:
            largest = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
            self.scales = [infer_scale(m, largest) for m in maps]
        k_min, k_max = round(-math.log2(self.scales[0])), round(-math.log2(self.scales[-1]))
        rois = to_roi_format(boxes)
        levels = components.map_levels(boxes, k_min, k_max, self.canonical_scale, self.canonical_level)
        result = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], *self.output_size))
        for level, (fmap, scale) in enumerate(zip(maps, self.scales)):
            in_level = torch.where(levels == level)[0]
            result[in_level] = components.roi_align(fmap, rois[in_level], self.output_size, scale, self.sampling_ratio)
        return result
