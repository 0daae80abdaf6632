"""Stage 5, the box and classifier head: class scores and refined boxes, then the final detections.

Shapes:
    N        images
    K        RoIs in the batch (1000 per image at test time; 512 sampled per image in training)
    C        classes, background (0) included: 91 for COCO, 6 for the course's shapes
    D        the MLP's width (1024 in R-50-FPN)
    G        ground-truth boxes in an image;  T detections kept per image (at most 100)

For 1000 proposals: 1000x256x7x7 pooled features -> 1000x1024 -> 1000x91 scores and 1000x364 deltas
(one box per class: Fast R-CNN regresses class-specific boxes, section 2.3).

Training labels every proposal with the ground-truth box it overlaps most (IoU >= 0.5 positive,
< 0.5 background), samples 512 per image with at most 25% positive, and adds the ground-truth boxes
themselves to the proposals so that every object has at least one perfect positive.

Left out: cascade refinement, class-agnostic regression, soft-NMS.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher, match_to_ground_truth


def two_mlp_head(head: "TwoMLPHead", x: Tensor) -> Tensor:
    """The box head's MLP (FPN paper, 4.2): each RoI's pooled grid flattened, then fc6 and fc7, each with a ReLU.

    Args:
        head: holds fc6 (Linear, 256 * 7 * 7 -> D) and fc7 (Linear, D -> D)
        x (Tensor[K, 256, 7, 7]): pooled features (channels-last in memory in the model: flatten, never view)
    Returns:
        Tensor[K, D]
    """
    x = x.flatten(start_dim=1)  # (K, 256 * 7 * 7), in (channel, row, column) order whatever the memory layout
    return F.relu(head.fc7(F.relu(head.fc6(x))))


class TwoMLPHead(nn.Module):
    """Flatten the pooled features and apply two fully connected layers with ReLU (FPN paper, 4.2)."""

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[K, 256, 7, 7] -> Tensor[K, D]."""
        return components.two_mlp_head(self, x)


def fastrcnn_predictor(predictor: "FastRCNNPredictor", x: Tensor) -> tuple[Tensor, Tensor]:
    """Class logits and class-specific box deltas, two linear layers side by side (Fast R-CNN, 2.1).

    Args:
        predictor: holds cls_score (Linear, D -> C) and bbox_pred (Linear, D -> 4C)
        x (Tensor[K, D], or Tensor[K, D, 1, 1] from a head that ends in a pooled convolution)
    Returns:
        class logits Tensor[K, C] (no softmax: the loss and post-processing take logits) and
        box deltas Tensor[K, 4C] (class c's four at 4c..4c+3)
    """
    x = x.flatten(start_dim=1)  # (K, D): a 4-d (K, D, 1, 1) input too
    return predictor.cls_score(x), predictor.bbox_pred(x)


class FastRCNNPredictor(nn.Module):
    """Two linear layers: class logits Tensor[K, C] and class-specific deltas Tensor[K, 4C]."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Tensor[K, D] -> (Tensor[K, C], Tensor[K, 4C])."""
        return components.fastrcnn_predictor(self, x)


def fastrcnn_loss(
    class_logits: Tensor, box_regression: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """The Fast R-CNN multi-task loss (Fast R-CNN, Eqn. 1).

    Args:
        class_logits (Tensor[K, C]); box_regression (Tensor[K, 4C])
        labels: N Tensor[K_i] int64, 0 for background; regression_targets: N Tensor[K_i, 4]
    Returns:
        classification loss: cross-entropy over all K sampled RoIs;
        box loss: smooth L1 (beta 1/9) of the ground-truth class's 4 deltas, positives only, summed
        and divided by K (all RoIs, not just positives: background RoIs count as zero box loss)
    """
    labels_all = torch.cat(labels, dim=0)  # (K,)
    targets_all = torch.cat(regression_targets, dim=0)  # (K, 4)
    classification_loss = F.cross_entropy(class_logits, labels_all)
    positive = torch.where(labels_all > 0)[0]
    num_rois, num_classes = class_logits.shape
    box_regression = box_regression.reshape(num_rois, num_classes, 4)  # (K, C, 4)
    box_loss = (
        F.smooth_l1_loss(
            box_regression[positive, labels_all[positive]],  # (K_pos, 4): only the true class's box
            targets_all[positive],
            beta=1 / 9,
            reduction="sum",
        )
        / labels_all.numel()
    )
    return classification_loss, box_loss


def postprocess_detections(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: list[Tensor],
    image_sizes: list[tuple[int, int]],
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """From scores and deltas to the final detections of each image.

    Softmax over classes; decode one box per class from its deltas; clip to the image; treat every
    (RoI, class) pair except background as a candidate; keep scores > score_thresh (strictly); drop
    boxes under 0.01 px; NMS per class at nms_thresh; keep the detections_per_img best.

    Args:
        class_logits (Tensor[K, C]); box_regression (Tensor[K, 4C]); proposals: N Tensor[K_i, 4]
        image_sizes: (H', W') per image
    Returns:
        boxes (N Tensor[T_i, 4]), scores (N Tensor[T_i]), labels (N Tensor[T_i] int64), by decreasing score
    """
    num_classes = class_logits.shape[-1]
    boxes_per_image = [len(p) for p in proposals]
    pred_boxes = BoxCoder(weights).decode(box_regression, proposals)  # (K, C, 4)
    pred_scores = F.softmax(class_logits, -1)  # (K, C)

    all_boxes, all_scores, all_labels = [], [], []
    for boxes, scores, size in zip(pred_boxes.split(boxes_per_image), pred_scores.split(boxes_per_image), image_sizes):
        boxes = components.clip_boxes_to_image(boxes, size)
        labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)  # (K_i, C)
        # drop the background column, then every (RoI, class) pair is one candidate
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = torch.where(scores > score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = components.remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = components.batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
        all_labels.append(labels[keep])
    return all_boxes, all_scores, all_labels


def select_training_samples(
    proposals: list[Tensor],
    targets: list[dict[str, Tensor]],
    matcher: Matcher,
    sampler: BalancedPositiveNegativeSampler,
    box_coder: BoxCoder,
    generator: torch.Generator | None = None,
    *,
    add_ground_truth: bool = True,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """Label the proposals and sample the RoIs the box head trains on (Fast R-CNN, section 2.3).

    Per image: the ground-truth boxes are appended to the proposals (every object then has at least one
    perfect positive); the matcher labels each RoI (its object's class at IoU >= 0.5, background 0 below,
    -1 ignored between the thresholds of a matcher that has a gap); the sampler draws (with `generator`)
    at most batch_size_per_image RoIs, at most positive_fraction of them positive; the sampled RoIs keep
    their order in the image's list; each gets its matched box encoded relative to it.

    Args:
        proposals: N Tensor[P_i, 4] from the RPN; targets: dicts with "boxes" (Tensor[G_i, 4]) and
        "labels" (Tensor[G_i] int64); an image may have no objects (G_i = 0: all its RoIs are background)
        generator: where the sampler's draws come from (None: torch's default generator, as torchvision)
        add_ground_truth: False leaves the ground-truth boxes out (the ablation lab's switch; the model never
            passes it, so a learner's function need not take it)
    Returns, per image, for its K_i sampled RoIs: the RoIs (Tensor[K_i, 4]), the index of each one's
    ground-truth box (Tensor[K_i] int64; background: 0), its class label (Tensor[K_i] int64, background
    0) and its regression targets (Tensor[K_i, 4]). The loss and the mask targets read the index and the
    targets of positive RoIs only.
    """
    all_rois, all_matches, all_labels = [], [], []
    for proposals_in_image, target in zip(proposals, targets):
        gt_boxes = target["boxes"].to(proposals_in_image.dtype)
        rois = torch.cat((proposals_in_image, gt_boxes)) if add_ground_truth else proposals_in_image  # (P + G, 4)
        if len(gt_boxes) == 0:  # no objects: every RoI is background (the matcher needs a box to match)
            matches = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
            labels = torch.zeros(len(rois), dtype=torch.int64, device=rois.device)
        else:
            codes = match_to_ground_truth(matcher, gt_boxes, rois)  # (P + G,): index, or a negative code
            matches = codes.clamp(min=0)
            labels = target["labels"][matches].to(torch.int64)
            labels[codes == Matcher.BELOW_LOW_THRESHOLD] = 0  # background
            labels[codes == Matcher.BETWEEN_THRESHOLDS] = -1  # neither: the sampler never draws it
        all_rois.append(rois)
        all_matches.append(matches)
        all_labels.append(labels)
    positive_masks, negative_masks = sampler(all_labels, generator)
    sampled = [torch.where(pos | neg)[0] for pos, neg in zip(positive_masks, negative_masks)]  # in index order
    sampled_rois = [rois[chosen] for rois, chosen in zip(all_rois, sampled)]
    sampled_matches = [matches[chosen] for matches, chosen in zip(all_matches, sampled)]
    sampled_labels = [labels[chosen] for labels, chosen in zip(all_labels, sampled)]
    # a background RoI's target is never used: without objects, a zero box stands in for the missing one
    boxes_to_match = [
        t["boxes"].to(r.dtype) if len(t["boxes"]) else r.new_zeros((1, 4)) for t, r in zip(targets, all_rois)
    ]
    matched_boxes = [boxes[matches] for boxes, matches in zip(boxes_to_match, sampled_matches)]
    regression_targets = box_coder.encode(matched_boxes, sampled_rois)
    return sampled_rois, sampled_matches, sampled_labels, regression_targets
