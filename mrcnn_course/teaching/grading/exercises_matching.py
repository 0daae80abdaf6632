"""The exercises of training-time matching, shared by the RPN and the box head: match_boxes and
sample_balanced (lesson 03b; the box head's training samples use them again in lesson 05)."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = ["check_match_boxes", "check_sample_balanced"]

from collections.abc import Callable

import torch

from mrcnn_course.model import matching
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake
from mrcnn_course.teaching.grading.exercises_rpn import _next_float32

RPN_MATCHER = (0.7, 0.3, True)  # Faster R-CNN, section 3.1.2
BOX_HEAD_MATCHER = (0.5, 0.5, False)  # Fast R-CNN, section 2.3


def _match_case(name: str, thresholds: tuple, iou: list | torch.Tensor, extra: bool = False) -> Case:
    matcher = Matcher(*thresholds)
    return Case(
        name, (matcher, torch.as_tensor(iou, dtype=torch.float32)), notes={"matcher": repr(matcher)}, extra=extra
    )


def _with_ties(num_gt: int, num_predictions: int, best: float, tied: list[int], rival: float) -> torch.Tensor:
    """Random IoU below `best`; gt 0's highest IoU `best` at the predictions `tied`; the first of them overlaps
    gt 1 by `rival` (more than `best`): its own best match is gt 1, whose best prediction is the last one."""
    iou = torch.rand(num_gt, num_predictions) * best * 0.8
    iou[0, tied] = best
    iou[1, tied[0]] = rival
    iou[1, -1] = 0.9
    return iou


def _match_cases() -> list[Case]:
    return [
        _match_case(
            "0.7 / 0.3: matched, between (-2), below (-1)",
            (0.7, 0.3, False),
            [[0.9, 0.5, 0.1, 0.35, 0.0, 0.75], [0.2, 0.72, 0.25, 0.1, 0.05, 0.8]],
        ),
        _match_case(
            "an IoU of exactly 0.7 is matched, of exactly 0.3 between",
            (0.7, 0.3, False),
            [[0.7, 0.3, 0.6999, 0.2999], [0.1, 0.2, 0.1, 0.1]],
        ),
        _match_case(
            "RPN: an object that no anchor overlaps by 0.7 keeps its best anchor",
            RPN_MATCHER,
            [[0.9, 0.1, 0.2, 0.0], [0.1, 0.45, 0.2, 0.35]],
        ),
        _match_case(
            "RPN: three anchors tie for an object's highest IoU: all three are matched",
            RPN_MATCHER,
            [[0.5, 0.1, 0.5, 0.3, 0.5, 0.0], [0.0, 0.2, 0.1, 0.8, 0.0, 0.1]],
        ),
        _match_case(
            "RPN: an object's best anchor overlaps another object more: it keeps ITS best",
            RPN_MATCHER,
            [[0.4, 0.1, 0.3, 0.0], [0.6, 0.9, 0.0, 0.2], [0.1, 0.0, 0.2, 0.5]],
        ),
        _match_case(
            "box head (0.5 / 0.5): nothing is ignored, no low-quality matches",
            BOX_HEAD_MATCHER,
            [[0.5, 0.49, 0.3, 0.0, 0.2], [0.1, 0.2, 0.8, 0.45, 0.1]],
        ),
        _match_case("RPN, 4 objects x 200 anchors", RPN_MATCHER, torch.rand(4, 200) ** 2, extra=True),
        _match_case(
            "RPN: ties, and a best anchor that prefers another object",
            RPN_MATCHER,
            _with_ties(3, 30, 0.55, [4, 11, 25], 0.6),
            extra=True,
        ),
        _match_case("box head, 3 objects x 100 proposals", BOX_HEAD_MATCHER, torch.rand(3, 100), extra=True),
        _match_case(
            "IoU exactly at the thresholds 0.6 / 0.4, low-quality matches",
            (0.6, 0.4, True),
            [[0.6, 0.4, 0.5, 0.1, 0.95], [0.1, 0.1, 0.39, 0.6, 0.2]],
            extra=True,
        ),
        _match_case(
            "box head: an IoU of exactly 0.5 is matched, and ties are not restored",
            BOX_HEAD_MATCHER,
            [[0.5, 0.3, 0.3, 0.1], [0.2, 0.45, 0.45, 0.1]],
            extra=True,
        ),
        _match_case(
            "one object, 12 anchors, all at the same IoU",
            RPN_MATCHER,
            torch.full((1, 12), 0.25),
            extra=True,
        ),
    ]


def _thresholds_moved(high=None, low=None, allow=None) -> Callable:
    """The reference with some of the matcher's settings changed (name: function of the old value)."""

    def wrong(matcher, iou):
        moved = Matcher(
            high(matcher.high_threshold) if high else matcher.high_threshold,
            low(matcher.low_threshold) if low else matcher.low_threshold,
            matcher.allow_low_quality_matches if allow is None else allow,
        )
        if moved.high_threshold < moved.low_threshold:  # 0.5 / 0.5 with low moved up: keep the order
            moved.high_threshold = moved.low_threshold
        return matching.match_boxes(moved, iou)

    return wrong


def _codes_swapped(matcher, iou):
    matches = matching.match_boxes(matcher, iou)
    swapped = matches.clone()
    swapped[matches == Matcher.BELOW_LOW_THRESHOLD] = Matcher.BETWEEN_THRESHOLDS
    swapped[matches == Matcher.BETWEEN_THRESHOLDS] = Matcher.BELOW_LOW_THRESHOLD
    return swapped


def _low_quality(matcher, iou, first_tie_only=False, row_it_is_best_for=False):
    """The reference's thresholds, then one of two usual low-quality mistakes."""
    matches = matching.match_boxes(Matcher(matcher.high_threshold, matcher.low_threshold), iou)
    if not matcher.allow_low_quality_matches:
        return matches
    best_rows = iou.argmax(dim=0)  # (P,)
    if first_tie_only:  # argmax: one prediction per gt
        best = iou.argmax(dim=1)
        matches[best] = best_rows[best]
        return matches
    rows, predictions = torch.where(iou == iou.max(dim=1).values[:, None])
    matches[predictions] = rows if row_it_is_best_for else best_rows[predictions]
    return matches


@exercise(
    cases=_match_cases,
    hint="per prediction (column) its best IoU and row (max over dim 0); >= high_threshold: the row; < "
    "low_threshold: -1; in between: -2; with allow_low_quality_matches, every prediction that has a "
    "ground-truth box's highest IoU (all of them when they tie) gets back its own best row. Return "
    "Tensor[P] int64.",
    steps=(
        "For every prediction, its highest IoU and the row where it is: Tensor.max over the ground-truth "
        "dimension gives both.",
        "Keep a copy of those rows (clone): the codes are about to overwrite some of them.",
        "Write Matcher.BELOW_LOW_THRESHOLD where the highest IoU is below the low threshold, and "
        "Matcher.BETWEEN_THRESHOLDS where it is at least the low one but below the high one (boolean masks).",
        "Only if matcher.allow_low_quality_matches: each ground-truth box's highest IoU over all predictions "
        "(a max over the other dimension); the predictions that reach it, ties included, are found by "
        "comparing the matrix with those maxima (torch.where gives their columns).",
        "Give those predictions back the rows from the copy.",
    ),
    fast="whole-matrix operations: Tensor.max along a dimension, boolean masks, one torch.where for the "
    "low-quality matches; no Python loop over predictions",
    mistakes=(
        Mistake(
            "an IoU EQUAL to high_threshold is a match: compare with >=, not >.",
            _thresholds_moved(high=_next_float32),
        ),
        Mistake(
            "an IoU EQUAL to low_threshold is BETWEEN (-2), not below: below means < low_threshold.",
            _thresholds_moved(low=_next_float32),
        ),
        Mistake(
            "the two codes are swapped: below low_threshold is Matcher.BELOW_LOW_THRESHOLD (-1), between "
            "the thresholds Matcher.BETWEEN_THRESHOLDS (-2).",
            _codes_swapped,
        ),
        Mistake(
            "no low-quality matches: with allow_low_quality_matches, each ground-truth box's best "
            "predictions get their match back (keep a clone of the best rows before writing the codes).",
            _thresholds_moved(allow=False),
        ),
        Mistake(
            "low-quality matches only when matcher.allow_low_quality_matches is True (the box head's "
            "matcher has none).",
            _thresholds_moved(allow=True),
        ),
        Mistake(
            "ties: EVERY prediction that has a ground-truth box's highest IoU gets its match back, not "
            "only the first (argmax picks one).",
            lambda matcher, iou: _low_quality(matcher, iou, first_tie_only=True),
        ),
        Mistake(
            "a prediction given back by a low-quality match gets ITS OWN best row (the box it overlaps "
            "most), not the row of the box it is the best for.",
            lambda matcher, iou: _low_quality(matcher, iou, row_it_is_best_for=True),
        ),
    ),
    torchvision_names=("torchvision.models.detection._utils.Matcher",),
)
def check_match_boxes(match_boxes: Callable, extra: bool = False) -> None:
    """Check your match_boxes(matcher, match_quality_matrix) -> Tensor[P] int64 against the reference (exactly)."""


def _sample_case(
    name: str,
    size: int,
    fraction: float,
    counts: tuple[int, int, int],
    seed: int,
    top_class: int = 1,
    extra: bool = False,
) -> Case:
    """`counts` positives, negatives and ignored, shuffled; positives of classes 1..top_class."""
    positives, negatives, ignored = counts
    labels = torch.cat(
        [
            torch.randint(1, top_class + 1, (positives,)),
            torch.zeros(negatives, dtype=torch.int64),
            torch.full((ignored,), -1),
        ]
    )
    labels = labels[torch.randperm(len(labels))]
    sampler = BalancedPositiveNegativeSampler(size, fraction)
    notes = {"sampler": repr(sampler), "generator": f"torch.Generator().manual_seed({seed})"}
    return Case(name, (sampler, labels, torch.Generator().manual_seed(seed)), notes=notes, extra=extra)


def _sample_cases() -> list[Case]:
    return [
        _sample_case("RPN: 256 anchors at half positives, plenty of both", 256, 0.5, (300, 2000, 200), seed=1),
        _sample_case("box head: 512 RoIs at a quarter, labels are classes 1..5", 512, 0.25, (300, 900, 0), 2, 5),
        _sample_case("fewer positives than asked: the negatives fill up", 256, 0.5, (20, 1000, 100), seed=3),
        _sample_case("an image without objects: only negatives", 256, 0.5, (0, 600, 50), seed=4),
        _sample_case("7 at half positives: int(3.5) = 3 positives", 7, 0.5, (6, 6, 2), seed=5),
        _sample_case("fewer elements than the batch: all of them", 256, 0.5, (3, 5, 2), seed=6, top_class=3),
        _sample_case("RPN, another draw", 256, 0.5, (500, 3000, 400), seed=11, extra=True),
        _sample_case("box head: 64 RoIs at a quarter, classes 1..3", 64, 0.25, (40, 200, 10), 12, 3, extra=True),
        _sample_case("5 positives for a quota of 32", 64, 0.5, (5, 300, 30), seed=13, extra=True),
        _sample_case("no objects, few elements", 16, 0.25, (0, 9, 4), seed=14, extra=True),
        _sample_case("7 at a quarter: int(1.75) = 1 positive", 7, 0.25, (5, 9, 3), seed=15, extra=True),
    ]


def _sampled(
    sampler,
    labels,
    generator,
    positive=lambda labels: labels >= 1,
    negative=lambda labels: labels == 0,
    quota=lambda size, fraction: int(size * fraction),
    fill=True,
    negatives_first=False,
    shuffle=True,
):
    """The sampler with one of the usual mistakes (each keyword, changed, is one)."""
    positives, negatives = torch.where(positive(labels))[0], torch.where(negative(labels))[0]
    quota_pos = quota(sampler.batch_size_per_image, sampler.positive_fraction)
    num_pos = min(positives.numel(), quota_pos)
    num_neg = min(negatives.numel(), sampler.batch_size_per_image - (num_pos if fill else quota_pos))

    def draw(indices, count):
        order = torch.randperm(indices.numel(), generator=generator) if shuffle else torch.arange(indices.numel())
        return indices[order[:count]]

    if negatives_first:
        chosen_neg, chosen_pos = draw(negatives, num_neg), draw(positives, num_pos)
    else:
        chosen_pos, chosen_neg = draw(positives, num_pos), draw(negatives, num_neg)
    pos_mask, neg_mask = torch.zeros_like(labels, dtype=torch.uint8), torch.zeros_like(labels, dtype=torch.uint8)
    pos_mask[chosen_pos] = 1
    neg_mask[chosen_neg] = 1
    return pos_mask, neg_mask


@exercise(
    cases=_sample_cases,
    hint="positives: labels >= 1, negatives: labels == 0 (-1 is never sampled); num_pos = min(positives, "
    "int(batch_size_per_image * positive_fraction)), num_neg = min(negatives, batch_size_per_image - "
    "num_pos); draw torch.randperm(number of positives, generator=generator) first, then the same for the "
    "negatives, and take the first num_pos / num_neg; return two uint8 masks Tensor[P].",
    steps=(
        "The indices of the positives (any label of 1 or more) and of the negatives (label 0), with torch.where.",
        "How many positives: the quota is the batch size times the fraction, truncated by int(); never more "
        "than there are.",
        "How many negatives: what the positives leave of the batch size, never more than there are.",
        "Shuffle the positives' indices with a random permutation drawn from `generator` (torch.randperm "
        "takes it as a keyword) and keep as many as you need; then the same for the negatives, in that order: "
        "the same generator state must give the same samples as torchvision.",
        "Two uint8 masks of the labels' length, zeros, with ones at the kept indices.",
    ),
    mistakes=(
        Mistake(
            "the negatives fill what the positives leave: num_neg = min(negatives, batch_size_per_image - "
            "num_pos), with num_pos the positives actually taken, not the quota.",
            lambda sampler, labels, generator: _sampled(sampler, labels, generator, fill=False),
        ),
        Mistake(
            "draw the positives first, then the negatives (torchvision's order): the draws of one "
            "generator depend on their order.",
            lambda sampler, labels, generator: _sampled(sampler, labels, generator, negatives_first=True),
        ),
        Mistake(
            "the samples are drawn at random: a permutation from torch.randperm(n, generator=generator), "
            "not the first positives and negatives in order.",
            lambda sampler, labels, generator: _sampled(sampler, labels, generator, shuffle=False),
        ),
        Mistake(
            "-1 means ignored: negatives are the labels == 0 only, never -1.",
            lambda sampler, labels, generator: _sampled(sampler, labels, generator, negative=lambda lab: lab <= 0),
        ),
        Mistake(
            "every label >= 1 is a positive (the box head's labels are classes 1, 2, ...), not only 1.",
            lambda sampler, labels, generator: _sampled(sampler, labels, generator, positive=lambda lab: lab == 1),
        ),
        Mistake(
            "the quota of positives is int(batch_size_per_image * positive_fraction): int() truncates, "
            "3.5 -> 3; not round() or ceil.",
            lambda sampler, labels, generator: _sampled(
                sampler, labels, generator, quota=lambda size, fraction: -int(-size * fraction // 1)
            ),
        ),
    ),
    torchvision_names=("torchvision.models.detection._utils.BalancedPositiveNegativeSampler",),
)
def check_sample_balanced(sample_balanced: Callable, extra: bool = False) -> None:
    """Check your sample_balanced(sampler, labels, generator) -> (positive mask, negative mask) against the
    reference (exactly: the same draws from the same generator)."""
