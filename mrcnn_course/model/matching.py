"""Training-time matching, shared by the RPN (anchors) and the box head (proposals).

Shapes:
    G   ground-truth boxes in an image
    P   predicted elements to label (anchors or proposals) in an image

Matcher gives each prediction the index of its ground-truth box or a negative code; the sampler
picks a fixed-size, class-balanced subset of them for the loss (Faster R-CNN, section 3.1.3).
Random draws use torch.randperm exactly as torchvision's sampler does, so a seeded run draws the
same samples in both.
"""

import torch
from torch import Tensor

from mrcnn_course.model import components


class Matcher:
    """Match every prediction to the ground-truth box it overlaps most.

    A prediction whose best IoU is >= high_threshold is matched (index >= 0); below low_threshold it
    is background (BELOW_LOW_THRESHOLD); in between it is ignored (BETWEEN_THRESHOLDS). With
    allow_low_quality_matches, each ground-truth box also keeps the predictions it overlaps most,
    even below the threshold, so that no object goes without a positive (the RPN needs it: a small
    object may overlap no anchor by 0.7).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} must be <= high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """match_quality_matrix (Tensor[G, P], IoU) -> Tensor[P] int64: gt index or a negative code."""
        if match_quality_matrix.numel() == 0:
            what = "ground-truth boxes" if match_quality_matrix.shape[0] == 0 else "proposals"
            raise ValueError(f"No {what} available for one of the images during training")
        matched_vals, matches = match_quality_matrix.max(dim=0)  # (P,): best gt per prediction
        all_matches = matches.clone()
        matches[matched_vals < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            # For each gt, the predictions tied for its highest IoU get their best match back.
            highest_per_gt = match_quality_matrix.max(dim=1).values  # (G,)
            _, best_predictions = torch.where(match_quality_matrix == highest_per_gt[:, None])
            matches[best_predictions] = all_matches[best_predictions]
        return matches


class BalancedPositiveNegativeSampler:
    """Pick batch_size_per_image elements per image, at most positive_fraction of them positive.

    Labels: >= 1 positive, 0 negative, -1 ignored. Returns, per image, two uint8 masks (Tensor[P])
    of the sampled positives and negatives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        pos_masks, neg_masks = [], []
        for labels_per_image in labels:
            positive = torch.where(labels_per_image >= 1)[0]
            negative = torch.where(labels_per_image == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)  # fill up with negatives
            chosen_pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            chosen_neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
            pos_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def match_to_ground_truth(matcher: Matcher, gt_boxes: Tensor, predicted_boxes: Tensor) -> Tensor:
    """IoU-match predicted_boxes (Tensor[P, 4]) to gt_boxes (Tensor[G, 4]) -> Tensor[P] int64 codes."""
    return matcher(components.box_iou(gt_boxes, predicted_boxes))
