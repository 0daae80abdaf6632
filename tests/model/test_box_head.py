"""Stage 5 against torchvision: head layout, Fast R-CNN loss, detection post-processing, training samples."""

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads

from mrcnn_course.model import torchvision_ops
from mrcnn_course.model.box_head import (
    FastRCNNPredictor,
    TwoMLPHead,
    fastrcnn_loss,
    postprocess_detections,
    select_training_samples,
)
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher


def generator(seed: int) -> torch.Generator:
    """A fresh generator per test: each test's inputs are the same whichever tests ran before it."""
    return torch.Generator().manual_seed(seed)


def test_heads_have_torchvision_keys_and_outputs():
    g = generator(1)
    ours_head, ours_pred = TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, 6)
    tv_head, tv_pred = TVTwoMLPHead(8 * 7 * 7, 32), TVPredictor(32, 6)
    assert list(ours_head.state_dict()) == list(tv_head.state_dict())
    assert list(ours_pred.state_dict()) == list(tv_pred.state_dict())
    tv_head.load_state_dict(ours_head.state_dict()), tv_pred.load_state_dict(ours_pred.state_dict())
    x = torch.randn(5, 8, 7, 7, generator=g)
    for a, b in zip(ours_pred(ours_head(x)), tv_pred(tv_head(x))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", ["ordinary", "no positives", "all positives"])
def test_fastrcnn_loss_matches_torchvision(case):
    g = generator(2)
    logits, deltas = torch.randn(12, 4, generator=g), torch.randn(12, 16, generator=g)
    labels = [torch.randint(0, 4, (7,), generator=g), torch.randint(0, 4, (5,), generator=g)]
    if case == "no positives":
        labels = [torch.zeros_like(l) for l in labels]
    if case == "all positives":
        labels = [l.clamp(min=1) for l in labels]
    targets = [torch.randn(7, 4, generator=g), torch.randn(5, 4, generator=g)]
    for a, b in zip(
        fastrcnn_loss(logits, deltas, labels, targets), torchvision_ops.fastrcnn_loss(logits, deltas, labels, targets)
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("score_thresh, detections", [(0.05, 100), (0.0, 10), (0.99, 100)])
def test_postprocess_detections_matches_torchvision(score_thresh, detections):
    g = generator(3)
    proposals = []
    for n in (40, 0, 7):  # an image without proposals too
        xy = torch.rand(n, 2, generator=g) * 80 - 5
        proposals.append(torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 50 + 0.001], dim=1))
    logits = torch.randn(47, 5, generator=g) * 3
    deltas = torch.randn(47, 20, generator=g)
    sizes = [(90, 80), (64, 64), (50, 120)]
    ours = postprocess_detections(logits, deltas, proposals, sizes, score_thresh, 0.5, detections)
    theirs = torchvision_ops.postprocess_detections(logits, deltas, proposals, sizes, score_thresh, 0.5, detections)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_select_training_samples_matches_torchvision():
    proposals = [
        torch.tensor([[0.0, 0, 10, 10], [1, 1, 12, 12], [20, 20, 40, 40], [50, 50, 60, 70]] * 5),
        torch.tensor([[5.0, 5, 30, 30]] * 3),
    ]
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 11, 11], [21, 19, 40, 41]]), "labels": torch.tensor([3, 1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # no objects
    theirs = TVRoIHeads(None, None, None, 0.5, 0.5, 8, 0.25, None, 0.05, 0.5, 100)
    torch.manual_seed(3)
    ours_out = select_training_samples(
        [p.clone() for p in proposals],
        targets,
        Matcher(0.5, 0.5),
        BalancedPositiveNegativeSampler(8, 0.25),
        BoxCoder((10.0, 10.0, 5.0, 5.0)),
    )
    torch.manual_seed(3)
    tv_out = theirs.select_training_samples([p.clone() for p in proposals], targets)
    for a, b in zip(ours_out, tv_out):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
