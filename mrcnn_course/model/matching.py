"""Training-time matching, shared by the RPN (anchors) and the box head (proposals).

Shapes:
    G   ground-truth boxes in an image
    P   predicted elements to label (anchors or proposals) in an image

Matcher gives each prediction the index of its ground-truth box or a negative code (match_boxes); the
sampler picks a fixed-size, class-balanced subset of them for the loss (sample_balanced; Faster R-CNN,
section 3.1.3). Random draws use torch.randperm exactly as torchvision's sampler does, positives first,
so a seeded run draws the same samples in both.

Left out: matching in an image without objects. An empty IoU matrix is refused, as torchvision's Matcher
refuses it; the RPN and the box head label such an image's anchors or proposals background before matching.
"""

import torch
from torch import Tensor

from mrcnn_course.model import components


class Matcher:
    """Match every prediction to the ground-truth box it overlaps most (match_boxes says how).

    RPN: Matcher(0.7, 0.3, allow_low_quality_matches=True); box head: Matcher(0.5, 0.5) (Faster R-CNN,
    section 3.1.2; Fast R-CNN, section 2.3).
    """

    BELOW_LOW_THRESHOLD = -1  # background
    BETWEEN_THRESHOLDS = -2  # ignored: neither object nor background

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} must be <= high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """match_quality_matrix (Tensor[G, P], IoU) -> Tensor[P] int64: gt index or a negative code."""
        if match_quality_matrix.numel() == 0:
            what = "ground-truth boxes" if match_quality_matrix.shape[0] == 0 else "proposals"
            raise ValueError(f"No {what} available for one of the images during training")
        return components.match_boxes(self, match_quality_matrix)


def match_boxes(matcher: Matcher, match_quality_matrix: Tensor) -> Tensor:
    """Label every prediction with its best ground-truth box, or a negative code.

    Args:
        matcher: its high_threshold, low_threshold and allow_low_quality_matches say how
        match_quality_matrix (Tensor[G, P]): IoU of each ground-truth box (row) with each prediction
            (column); G >= 1 and P >= 1
    Returns:
        Tensor[P] int64: for prediction p, the row g of its highest IoU if that IoU >= high_threshold;
        Matcher.BELOW_LOW_THRESHOLD (-1) if it is < low_threshold; Matcher.BETWEEN_THRESHOLDS (-2) in
        between. With allow_low_quality_matches, the predictions that have a ground-truth box's highest
        IoU (every one of them when several tie) get their own best row back, whatever their IoU: no
        object goes without a positive (a small object may overlap no anchor by 0.7).
    """
    matched_vals, matches = match_quality_matrix.max(dim=0)  # (P,): best gt per prediction
    all_matches = matches.clone()
    matches[matched_vals < matcher.low_threshold] = Matcher.BELOW_LOW_THRESHOLD
    between = (matched_vals >= matcher.low_threshold) & (matched_vals < matcher.high_threshold)
    matches[between] = Matcher.BETWEEN_THRESHOLDS
    if matcher.allow_low_quality_matches:
        highest_per_gt = match_quality_matrix.max(dim=1).values  # (G,)
        _, best_predictions = torch.where(match_quality_matrix == highest_per_gt[:, None])  # ties: all of them
        matches[best_predictions] = all_matches[best_predictions]  # their own best gt, not necessarily this one
    return matches


class BalancedPositiveNegativeSampler:
    """Pick batch_size_per_image elements per image, at most positive_fraction of them positive.

    RPN: 256 anchors, half positive; box head: 512 RoIs, a quarter positive (Faster R-CNN, section 3.1.3).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __repr__(self) -> str:
        return (
            f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )

    def __call__(
        self, labels: list[Tensor], generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """labels: per image Tensor[P] (>= 1 positive, 0 negative, -1 ignored) -> per image two uint8
        masks Tensor[P], the sampled positives and negatives. generator: where the draws come from
        (None: torch's default generator, as torchvision's sampler)."""
        pos_masks, neg_masks = [], []
        for labels_per_image in labels:
            pos_mask, neg_mask = components.sample_balanced(self, labels_per_image, generator)
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def sample_balanced(
    sampler: BalancedPositiveNegativeSampler, labels: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Sample one image's elements for the loss: at most a fraction positive, the rest negative.

    Args:
        sampler: its batch_size_per_image and positive_fraction say how many
        labels (Tensor[P] int): >= 1 positive (a class, or 1 for the RPN), 0 negative, -1 ignored
        generator: draw with torch.randperm(..., generator=generator) (None: torch's default generator)
    Returns:
        two uint8 masks, Tensor[P] each: the sampled positives and the sampled negatives.
        num_pos = min(positives, int(batch_size_per_image * positive_fraction)) (int truncates);
        num_neg = min(negatives, batch_size_per_image - num_pos): negatives fill what positives leave.
        The draws, in this order: a random permutation of the positives, of which the first num_pos are
        taken; then one of the negatives, the first num_neg taken (torchvision's order, so that the same
        generator state gives the same samples).
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(positive.numel(), int(sampler.batch_size_per_image * sampler.positive_fraction))
    num_neg = min(negative.numel(), sampler.batch_size_per_image - num_pos)  # fill up with negatives
    chosen_pos = positive[torch.randperm(positive.numel(), device=labels.device, generator=generator)[:num_pos]]
    chosen_neg = negative[torch.randperm(negative.numel(), device=labels.device, generator=generator)[:num_neg]]
    pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
    neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
    pos_mask[chosen_pos] = 1
    neg_mask[chosen_neg] = 1
    return pos_mask, neg_mask


def match_to_ground_truth(matcher: Matcher, gt_boxes: Tensor, predicted_boxes: Tensor) -> Tensor:
    """IoU-match predicted_boxes (Tensor[P, 4]) to gt_boxes (Tensor[G, 4]) -> Tensor[P] int64 codes."""
    return matcher(components.box_iou(gt_boxes, predicted_boxes))
