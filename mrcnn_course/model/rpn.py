"""Stage 3, the Region Proposal Network: anchors, objectness and box deltas, proposals, losses.

Shapes:
    N          images
    L          FPN levels (5: P2..P6)
    A          anchors per location (3 aspect ratios x 1 size per level in R-50-FPN)
    H_l, W_l   the size of level l's map; R = sum over levels of H_l * W_l * A, all anchors
    P          proposals kept per image (1000 at test time, 2000 in training for R-50-FPN)
    G          ground-truth boxes in an image

For an 800x800 image: R = 3 * (200^2 + 100^2 + 50^2 + 25^2 + 13^2) = 159,882 anchors, 1000 proposals.

The head slides a 3x3 conv over every level and predicts, per anchor, one objectness logit and four
deltas (Faster R-CNN, section 3.1). Proposals are the decoded anchors that survive filtering:
top-k per level, clip, drop tiny boxes, NMS per level, the best P per image.

Gotchas for an exact match with torchvision: anchor centres sit at i * stride (no half-stride
offset); the cell anchors are rounded; the stride is padded size // grid size (61, not 64, for the
13-cell level of an 800-px image); anchors are ordered location-major, then aspect ratio.

Left out: RPN on a single feature map without FPN (works, but untested), rotated anchors.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.input_image import ImageList
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher, match_to_ground_truth


def cell_anchors(sizes: tuple[float, ...], aspect_ratios: tuple[float, ...]) -> Tensor:
    """The anchors of one location, centred on (0, 0).

    Args:
        sizes: anchor side lengths for a square anchor (sqrt of the area)
        aspect_ratios: height / width; each keeps the area size^2
    Returns:
        Tensor[A, 4] with A = len(aspect_ratios) * len(sizes), ordered ratio-major, rounded to whole
        pixels (half to even, as torch.round)
    """
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    widths = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (A,)
    heights = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()


def anchor_grid(cell: Tensor, grid_size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Place the cell anchors at every location of a feature map.

    Args:
        cell (Tensor[A, 4]): anchors of one location, centred on (0, 0)
        grid_size: (H_l, W_l), the feature map's size
        stride: (stride_y, stride_x) in image pixels per feature-map cell
    Returns:
        Tensor[H_l * W_l * A, 4]: location-major (row by row), then the A anchors of each location.
        Location (i, j) is centred on (j * stride_x, i * stride_y) in the image.
    """
    grid_h, grid_w = grid_size
    shifts_x = torch.arange(grid_w, dtype=torch.int32, device=cell.device) * stride[1]
    shifts_y = torch.arange(grid_h, dtype=torch.int32, device=cell.device) * stride[0]
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H_l, W_l) each
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H_l * W_l, 4)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)  # (H_l * W_l * A, 4)


class AnchorGenerator(nn.Module):
    """Anchors for every level: sizes[l] and aspect_ratios[l] for level l.

    R-50-FPN: one size per level, 32, 64, 128, 256, 512 px for P2..P6, ratios 0.5, 1, 2.
    """

    def __init__(self, sizes: tuple[tuple[float, ...], ...], aspect_ratios: tuple[tuple[float, ...], ...]):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"{len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect ratios")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, images: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors per image (the same for all images of a batch): a list of N Tensor[R, 4]."""
        if len(feature_maps) != len(self.sizes):
            raise ValueError(f"{len(feature_maps)} feature maps but anchor sizes for {len(self.sizes)} levels")
        padded_h, padded_w = images.tensors.shape[-2:]
        per_level = []
        for fmap, sizes, ratios in zip(feature_maps, self.sizes, self.aspect_ratios):
            grid_h, grid_w = fmap.shape[-2:]
            stride = (padded_h // grid_h, padded_w // grid_w)  # integer division: 61 for 800 / 13
            cell = components.cell_anchors(sizes, ratios).to(fmap.dtype)
            per_level.append(components.anchor_grid(cell, (grid_h, grid_w), stride).to(fmap.dtype))
        anchors = torch.cat(per_level)
        return [anchors for _ in images.image_sizes]


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by all levels, then 1x1 convs for A logits and 4A deltas per location;
    forward (rpn_head) flattens them into anchor order."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        # Nested Sequentials only so that the keys read conv.0.0.weight, as torchvision's (whose inner
        # Sequential also holds the ReLU: here rpn_head applies it, so that writing the head shows it).
        self.conv = nn.Sequential(nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1)))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)  # Faster R-CNN, section 3.1.3
                if layer.bias is not None:  # every convolution here has one
                    nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """features: L Tensor[N, C, H_l, W_l] -> objectness Tensor[N, R] and deltas Tensor[N, R, 4] (rpn_head)."""
        return components.rpn_head(self, features)


def rpn_head(head: RPNHead, features: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The RPN head on every level, its outputs flattened into the anchors' order.

    Args:
        head: its layers head.conv (the 3x3 convolution), head.cls_logits (1x1, C -> A) and
            head.bbox_pred (1x1, C -> 4A), the same for every level
        features: L Tensor[N, C, H_l, W_l], the FPN maps, finest first
    Returns:
        objectness (Tensor[N, R]): one logit per anchor; pred_deltas (Tensor[N, R, 4]): (dx, dy, dw, dh)
        per anchor; R = sum over levels of H_l * W_l * A, in the anchors' order: level by level, then
        location by location (row by row), then the A anchors of a location.
    Per level: t = relu(conv(feature)); the logits (N, A, H, W) and the deltas (N, A * 4, H, W), whose
    channel a * 4 + k holds coordinate k of anchor a. The anchors are location-major, the maps
    channel-major: a permute puts the channels last before flattening (a plain reshape would list
    anchor 0 at every location first, and no shape would say so).
    """
    objectness, pred_deltas = [], []
    for feature in features:
        t = F.relu(head.conv(feature))
        logits, deltas = head.cls_logits(t), head.bbox_pred(t)
        n, a, h, w = logits.shape
        objectness.append(logits.permute(0, 2, 3, 1).reshape(n, h * w * a))  # (N, A, H, W) -> (N, H, W, A) -> (N, HWA)
        # (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, HWA, 4)
        pred_deltas.append(deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4))
    return torch.cat(objectness, dim=1), torch.cat(pred_deltas, dim=1)


def filter_proposals(
    proposals: Tensor,
    objectness: Tensor,
    image_sizes: list[tuple[int, int]],
    num_anchors_per_level: list[int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> tuple[list[Tensor], list[Tensor]]:
    """Turn all decoded anchors into a short list of proposals per image.

    Args:
        proposals (Tensor[N, R, 4]): decoded anchors; objectness (Tensor[N, R]): logits
        image_sizes: (H', W') of each image, to clip to
        num_anchors_per_level: how R splits into levels
        pre_nms_top_n: best logits kept per level before NMS; post_nms_top_n: kept per image after
        nms_thresh: IoU above which NMS suppresses (within a level only)
        min_size: drop boxes with a side below this; score_thresh: drop scores (sigmoid) below
    Returns:
        boxes: N Tensor[P_i, 4]; scores: N Tensor[P_i] (probabilities), both by decreasing score

    Top-k per level keeps the fine levels (with the most anchors) from crowding out the coarse ones.
    """
    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)  # no gradient flows through proposals
    levels = torch.cat(
        [torch.full((n,), i, dtype=torch.int64, device=proposals.device) for i, n in enumerate(num_anchors_per_level)]
    )
    top_indices = []
    offset = 0
    for logits_per_level in objectness.split(num_anchors_per_level, dim=1):
        k = min(pre_nms_top_n, logits_per_level.shape[1])
        top_indices.append(logits_per_level.topk(k, dim=1).indices + offset)  # (N, k)
        offset += logits_per_level.shape[1]
    top = torch.cat(top_indices, dim=1)  # (N, sum of k)
    rows = torch.arange(num_images, device=proposals.device)[:, None]
    scores_all = torch.sigmoid(objectness[rows, top])
    boxes_all, levels_all = proposals[rows, top], levels[top]

    final_boxes, final_scores = [], []
    for boxes, scores, lvl, size in zip(boxes_all, scores_all, levels_all, image_sizes):
        boxes = components.clip_boxes_to_image(boxes, size)
        keep = components.remove_small_boxes(boxes, min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = components.batched_nms(boxes, scores, lvl, nms_thresh)[:post_nms_top_n]
        final_boxes.append(boxes[keep])
        final_scores.append(scores[keep])
    return final_boxes, final_scores


def rpn_loss(
    objectness: Tensor,
    pred_deltas: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    sampled_positive: list[Tensor],
    sampled_negative: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """The RPN's two losses over the sampled anchors of a batch (Faster R-CNN, Eqn. 1).

    Args:
        objectness (Tensor[N, R]): logits; pred_deltas (Tensor[N, R, 4]): predicted (dx, dy, dw, dh)
        labels: N Tensor[R], 1.0 object, 0.0 background, -1.0 ignored (the logits' dtype)
        regression_targets: N Tensor[R, 4], the encoded matched boxes (meaningful for objects only)
        sampled_positive, sampled_negative: N uint8 Tensor[R] each, the sampler's masks
    Returns:
        (loss_objectness, loss_rpn_box_reg), two scalars:
        loss_objectness: binary cross-entropy with logits, averaged over the S sampled anchors of the
        whole batch (positives and negatives); loss_rpn_box_reg: smooth L1 with beta = 1/9 over the
        sampled positives' four deltas, summed, then divided by S, the number of SAMPLED anchors, not of
        positives (torchvision's normalization; Eqn. 1's lambda folded in).
    """
    positive = torch.cat(sampled_positive).bool()  # (N * R,): the images one after another
    sampled = positive | torch.cat(sampled_negative).bool()
    box_loss = (
        F.smooth_l1_loss(
            pred_deltas.reshape(-1, 4)[positive], torch.cat(regression_targets)[positive], beta=1 / 9, reduction="sum"
        )
        / sampled.sum()
    )
    objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], torch.cat(labels)[sampled])
    return objectness_loss, box_loss


@dataclass
class RPNOutput:
    """What the RPN computed for a batch: anchors (N Tensor[R, 4]), objectness logits (Tensor[N, R]),
    deltas (Tensor[N, R, 4]), and the proposals (N Tensor[P_i, 4]) with their scores (N Tensor[P_i])."""

    anchors: list[Tensor]
    objectness: Tensor
    pred_deltas: Tensor
    boxes: list[Tensor]
    scores: list[Tensor]


class RegionProposalNetwork(nn.Module):
    """Anchors + head -> proposals per image; in training also the two RPN losses.

    Training: anchors with IoU >= fg_iou_thresh (0.7) to a ground-truth box are positive, < bg_iou_thresh
    (0.3) negative, the rest ignored; batch_size_per_image (256) anchors are sampled per image, at most
    positive_fraction (half) positive.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: dict[str, int] | None = None,
        post_nms_top_n: dict[str, int] | None = None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self._post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = 1e-3  # drop proposals thinner than this, in pixels

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels Tensor[R] (1 object, 0 background, -1 ignore) and matched boxes Tensor[R, 4]."""
        labels, matched_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            gt_boxes = target["boxes"]
            if gt_boxes.numel() == 0:  # an image with no objects: every anchor is background
                matched_boxes.append(torch.zeros_like(anchors_per_image))
                labels.append(anchors_per_image.new_zeros(len(anchors_per_image)))
                continue
            matched = match_to_ground_truth(self.proposal_matcher, gt_boxes, anchors_per_image)
            matched_boxes.append(gt_boxes[matched.clamp(min=0)])  # negative codes -> any box; masked out below
            labels_per_image = (matched >= 0).to(anchors_per_image.dtype)  # the objectness logits' dtype
            labels_per_image[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
        return labels, matched_boxes

    def compute_loss(
        self, objectness: Tensor, pred_deltas: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Sample the anchors, then the two losses over them (rpn_loss)."""
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        return components.rpn_loss(objectness, pred_deltas, labels, regression_targets, pos_masks, neg_masks)

    def propose(self, images: ImageList, features: dict[str, Tensor]) -> RPNOutput:
        """Run the head on every level and filter the decoded anchors into proposals."""
        feature_list = list(features.values())
        objectness, pred_deltas = self.head(feature_list)  # (N, R), (N, R, 4)
        anchors = self.anchor_generator(images, feature_list)
        num_images = len(anchors)
        num_anchors_per_level = [  # H_l * W_l * A
            f.shape[-2] * f.shape[-1] * a
            for f, a in zip(feature_list, self.anchor_generator.num_anchors_per_location())
        ]
        # The proposals do not carry gradients: Faster R-CNN's approximate joint training.
        decoded = self.box_coder.decode(pred_deltas.detach().reshape(-1, 4), anchors).view(num_images, -1, 4)
        boxes, scores = components.filter_proposals(
            decoded,
            objectness,
            images.image_sizes,
            num_anchors_per_level,
            self.pre_nms_top_n(),
            self.post_nms_top_n(),
            self.nms_thresh,
            self.min_size,
            self.score_thresh,
        )
        return RPNOutput(anchors, objectness, pred_deltas, boxes, scores)

    def forward(
        self, images: ImageList, features: dict[str, Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals (N Tensor[P_i, 4]) and, in training, {"loss_objectness", "loss_rpn_box_reg"}."""
        out = self.propose(images, features)
        losses = {}
        if self.training:
            assert targets is not None, "training needs targets (MaskRCNN.forward checks them first)"
            labels, matched_boxes = self.assign_targets_to_anchors(out.anchors, targets)
            regression_targets = self.box_coder.encode(matched_boxes, out.anchors)
            loss_objectness, loss_box = self.compute_loss(out.objectness, out.pred_deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}
        return out.boxes, losses
