"""Box operations shared by every stage: area, IoU, clipping, encoding and NMS.

Shapes:
    N, M   numbers of boxes
    C      number of classes (or categories for batched NMS)

Boxes are (x1, y1, x2, y2) in pixels, x2 > x1 and y2 > y1. A width is x2 - x1, with no "+1":
torchvision dropped the old Detectron convention, and an exact match depends on it.

Left out: rotated boxes, other box formats (xywh, cxcywh), generalized IoU losses.
"""

import functools
import math

import torch
from torch import Tensor

from mrcnn_course.model import components

# The largest log-scale step a decoded box may take: exp(4.135) = 62.5x, so a 16-px anchor grows to
# at most 1000 px. Without it an untrained head can overflow torch.exp.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes: Tensor) -> Tensor:
    """Areas of boxes (Tensor[..., 4]) -> Tensor[...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair.

    Args:
        boxes1 (Tensor[N, 4]), boxes2 (Tensor[M, 4])
    Returns:
        Tensor[N, M]: IoU of boxes1[i] and boxes2[j]; NaN for two zero-area boxes (0 / 0), as torchvision.

    One coordinate at a time, (N, 1) against (M,), from contiguous copies of the four columns: a column
    sliced out of an (N, 4) tensor (boxes[:, 0]) has a stride of 4, and broadcasting it runs several times
    slower than broadcasting a contiguous one (benchmarks/TUNING.md, "What made the step cheaper"; measured
    by benchmarks/vs_torchvision.py --nms). The same numbers either way.
    """
    left1, top1, right1, bottom1 = boxes1.T.contiguous()  # 4 x (N,)
    left2, top2, right2, bottom2 = boxes2.T.contiguous()  # 4 x (M,)
    widths = torch.min(right1[:, None], right2).sub_(torch.max(left1[:, None], left2)).clamp_(min=0)  # (N, M)
    heights = torch.min(bottom1[:, None], bottom2).sub_(torch.max(top1[:, None], top2)).clamp_(min=0)
    intersection = widths.mul_(heights)  # no overlap -> 0
    area1 = (right1 - left1) * (bottom1 - top1)  # (N,)
    area2 = (right2 - left2) * (bottom2 - top2)  # (M,)
    return intersection / (area1[:, None] + area2).sub_(intersection)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp boxes (Tensor[..., 4]) inside an image of size (height, width)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2): x1, x2
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2): y1, y2
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)  # interleave back to x1, y1, x2, y2


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (Tensor[K] int64) of boxes (Tensor[N, 4]) whose both sides are >= min_size."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def encode_boxes(reference_boxes: Tensor, proposals: Tensor, weights: tuple[float, ...]) -> Tensor:
    """Regression targets that move each proposal onto its reference box (Faster R-CNN, Eqn. 2).

    Args:
        reference_boxes (Tensor[N, 4]): where the boxes should end up (matched ground truth)
        proposals (Tensor[N, 4]): the boxes we start from (anchors or proposals)
        weights: (wx, wy, ww, wh) scale the deltas so that they have roughly unit variance:
            (1, 1, 1, 1) in the RPN, (10, 10, 5, 5) in the box head
    Returns:
        Tensor[N, 4]: (dx, dy, dw, dh) = (wx * (gx - px) / pw, wy * (gy - py) / ph,
        ww * log(gw / pw), wh * log(gh / ph)) with centres (x, y) and sizes (w, h).
    """
    wx, wy, ww, wh = weights
    widths = proposals[:, 2] - proposals[:, 0]
    heights = proposals[:, 3] - proposals[:, 1]
    ctr_x = proposals[:, 0] + 0.5 * widths
    ctr_y = proposals[:, 1] + 0.5 * heights
    gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0]
    gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1]
    gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_widths
    gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_heights
    dx = wx * (gt_ctr_x - ctr_x) / widths
    dy = wy * (gt_ctr_y - ctr_y) / heights
    dw = ww * torch.log(gt_widths / widths)
    dh = wh * torch.log(gt_heights / heights)
    return torch.stack((dx, dy, dw, dh), dim=1)


def decode_boxes(deltas: Tensor, boxes: Tensor, weights: tuple[float, ...], clip: float = BBOX_XFORM_CLIP) -> Tensor:
    """Apply regression deltas to boxes: the inverse of encode_boxes.

    Args:
        deltas (Tensor[N, 4 * C]): (dx, dy, dw, dh) per box, one group of 4 per class
        boxes (Tensor[N, 4]): the boxes the deltas are relative to
        weights: the same (wx, wy, ww, wh) the deltas were encoded with
        clip: dw and dh are clamped at this value before exp (gotcha: not clamping lets an untrained
            head produce inf boxes)
    Returns:
        Tensor[N, C, 4]: decoded boxes
    """
    wx, wy, ww, wh = weights
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2:3] - boxes[:, 0:1]  # (N, 1)
    heights = boxes[:, 3:4] - boxes[:, 1:2]
    ctr_x = boxes[:, 0:1] + 0.5 * widths
    ctr_y = boxes[:, 1:2] + 0.5 * heights

    dx = deltas[:, 0::4] / wx  # (N, C)
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=clip)
    dh = (deltas[:, 3::4] / wh).clamp(max=clip)

    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * torch.exp(dw) * widths
    half_h = 0.5 * torch.exp(dh) * heights
    corners = (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h)
    return torch.stack(corners, dim=2)  # (N, C, 4)


class BoxCoder:
    """Encodes boxes as regression targets and decodes predictions back, with fixed weights.

    The same class, with the same name and methods, as torchvision's detection BoxCoder, working on
    lists of per-image tensors.
    """

    def __init__(self, weights: tuple[float, float, float, float], bbox_xform_clip: float = BBOX_XFORM_CLIP):
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> list[Tensor]:
        """Per image: Tensor[N_i, 4] targets from matched boxes and proposals (lists of Tensor[N_i, 4])."""
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = components.encode_boxes(torch.cat(reference_boxes), torch.cat(proposals), self.weights)
        return list(targets.split(boxes_per_image, 0))

    def decode(self, deltas: Tensor, boxes: list[Tensor]) -> Tensor:
        """Deltas Tensor[sum N_i, 4 * C] on the concatenated boxes (list of Tensor[N_i, 4]) -> Tensor[sum N_i, C, 4]."""
        concat_boxes = torch.cat(boxes, dim=0)
        return components.decode_boxes(deltas, concat_boxes, self.weights, self.bbox_xform_clip)


# Boxes settled together in nms: a block's IoU matrix stays in the CPU's cache (benchmarks/vs_torchvision.py --nms).
NMS_BLOCK = 512


@functools.lru_cache(maxsize=4)
def _later_than(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Tensor[size, size] of 0/1: 1 where j > i (the strict upper triangle), kept for the next block of this size."""
    return torch.ones(size, size, dtype=dtype, device=device).triu_(diagonal=1)


def overlap_matrix(iou: Tensor, iou_threshold: float) -> Tensor:
    """1.0 where iou > iou_threshold (strictly), else 0.0 (NaN: 0.0), as Tensor[N, M] of iou's float type.

    0/1 floats rather than bools: on the CPU a comparison into a bool tensor is several times slower than into
    a float one (benchmarks/TUNING.md, "What made the step cheaper"), and a float matrix lets a matrix product
    answer "does any kept box overlap j?" at once.
    """
    return torch.gt(iou, iou_threshold, out=torch.empty_like(iou))


def settle_block(overlaps: Tensor) -> Tensor:
    """Greedy NMS inside a block, given which box would suppress which (Cluster-NMS, Zheng et al. 2020).

    Args:
        overlaps (Tensor[B, B] float, 0/1): overlaps[i, j] = 1 when box i (higher score) overlaps box j by
            IoU > t and i < j (upper triangle only)
    Returns:
        Tensor[B] bool: which boxes greedy NMS keeps.

    Greedy NMS keeps j when no KEPT box before it overlaps it: keep[j] = not any(keep[i] and overlaps[i, j]).
    Start from "all kept" and apply that rule to every box at once, again and again: after pass p the
    first p boxes are certainly right (box j depends only on boxes before it), so the passes stop
    changing within B passes, and when they stop, `keep` satisfies the rule for every box: it IS greedy
    NMS's answer (the rule has one solution). On real proposals it stops after 2 to 5 passes. With keep as
    0/1 floats, keep @ overlaps counts the kept boxes that overlap each box: one matrix-vector product a pass.
    """
    keep = torch.ones(len(overlaps), dtype=overlaps.dtype, device=overlaps.device)  # (B,) 0/1
    while True:
        new_keep = (keep @ overlaps == 0).to(overlaps.dtype)  # (B,): overlapped by no box kept in this pass
        # nothing changes any more? (not torch.equal: a tampering learner may patch it in the kernel where the
        # package's NMS runs too, tests/teaching/grading/test_sealed.py)
        if not bool((new_keep != keep).any()):
            return keep.bool()
        keep = new_keep


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, in matrix form.

    Visit the boxes from the highest score down; keep a box unless it overlaps a box kept before it
    by IoU > iou_threshold (strictly).

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]), iou_threshold
    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score.

    Exactly greedy NMS, without a Python step per box: take the NMS_BLOCK best boxes still undecided,
    settle them among themselves with one IoU matrix (settle_block), then let the block's kept boxes
    remove every later box they overlap, in one more IoU matrix; repeat with the boxes left. Every IoU
    goes through components.box_iou (yours, in the capstone).
    Gotcha: boxes with equal scores may come out in another order than torchvision's C++ sort.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)  # (N,): undecided boxes, best first
    remaining = boxes[order]  # (N, 4), the same order
    kept = []
    while len(order):
        block = remaining[:NMS_BLOCK]  # (B, 4)
        overlaps = overlap_matrix(components.box_iou(block, block), iou_threshold)  # (B, B)
        keep = settle_block(overlaps.mul_(_later_than(len(block), overlaps.dtype, overlaps.device)))
        kept.append(order[:NMS_BLOCK][keep])
        order, remaining = order[NMS_BLOCK:], remaining[NMS_BLOCK:]
        if len(order):  # later boxes that a kept box of the block overlaps are gone
            hits = overlap_matrix(components.box_iou(block[keep], remaining), iou_threshold)  # (K, N_left)
            alive = hits.amax(dim=0) == 0  # (N_left,)
            order, remaining = order[alive], remaining[alive]
    return torch.cat(kept)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS done independently per category (class or FPN level).

    Args:
        boxes (Tensor[N, 4]), scores (Tensor[N]), idxs (Tensor[N] int64): the category of each box
    Returns:
        Tensor[K] int64: indices of the kept boxes, by decreasing score.

    Shifting each category's boxes by a different offset makes boxes of different categories never
    overlap, so one NMS call does them all; for many boxes, NMS per category is cheaper than the
    offset trick's N x N IoU matrix. The same rule as torchvision (offsets up to 1000 boxes).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if len(boxes) <= 1000:
        offsets = idxs.to(boxes) * (boxes.max() + 1)  # (N,)
        return components.nms(boxes + offsets[:, None], scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        keep_mask[members[components.nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]
