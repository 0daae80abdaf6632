"""Stage 5 against torchvision: head layout, Fast R-CNN loss, detection post-processing, training samples."""

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads

from mrcnn_course.model import components, torchvision_ops
from mrcnn_course.model.box_head import (
    FastRCNNPredictor,
    TwoMLPHead,
    fastrcnn_loss,
    postprocess_detections,
    select_training_samples,
)
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher
from mrcnn_course.training import data


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


def _proposals_and_targets() -> tuple[list[torch.Tensor], list[dict]]:
    """Three images: proposals around two objects, proposals and no object, a few proposals and one object."""
    g = generator(4)
    around = torch.tensor([[0.0, 0, 10, 10], [1, 1, 12, 12], [20, 20, 40, 40], [50, 50, 60, 70]]).repeat(5, 1)
    proposals = [around + torch.rand(20, 4, generator=g) * 4, torch.tensor([[5.0, 5, 30, 30]] * 3), around[:6] * 1.5]
    targets = [
        {"boxes": torch.tensor([[0.0, 0, 11, 11], [21, 19, 40, 41]]), "labels": torch.tensor([3, 1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},  # no objects
        {"boxes": torch.tensor([[30.0, 30, 62, 62]]), "labels": torch.tensor([2])},
    ]
    return proposals, targets


@pytest.mark.parametrize("thresholds", [(0.5, 0.5), (0.6, 0.4)])
def test_select_training_samples_matches_torchvision(thresholds):
    """The same RoIs, indices, labels and targets as torchvision's RoIHeads, drawing from the same seed."""
    proposals, targets = _proposals_and_targets()
    matcher, sampler = Matcher(*thresholds), BalancedPositiveNegativeSampler(8, 0.25)
    theirs = TVRoIHeads(None, None, None, *thresholds, 8, 0.25, None, 0.05, 0.5, 100)
    torch.manual_seed(3)  # the model passes no generator: the draws come from torch's default one
    ours_out = select_training_samples(
        [p.clone() for p in proposals], targets, matcher, sampler, BoxCoder((10.0, 10.0, 5.0, 5.0))
    )
    torch.manual_seed(3)
    tv_out = theirs.select_training_samples([p.clone() for p in proposals], targets)
    assert [len(rois) for rois in ours_out[0]] == [8, 3, 7]  # 3 RoIs with no object; 6 proposals + 1 gt box
    for a, b in zip(ours_out, tv_out):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_select_training_samples_draws_from_its_generator_as_torchvision_from_the_default_one():
    proposals, targets = _proposals_and_targets()
    args = (
        proposals,
        targets,
        Matcher(0.5, 0.5),
        BalancedPositiveNegativeSampler(4, 0.5),
        BoxCoder((1.0, 1.0, 1.0, 1.0)),
    )
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    ours = select_training_samples(*args, torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), before), "the default generator is left alone"
    theirs = torchvision_ops.select_training_samples(*args, torch.Generator().manual_seed(5))
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    again = select_training_samples(*args, torch.Generator().manual_seed(6))
    assert any(not torch.equal(x, y) for x, y in zip(ours[0], again[0])), "another seed, another sample"


def test_ground_truth_boxes_are_positives_and_images_without_objects_background():
    proposals, targets = _proposals_and_targets()
    far = [torch.tensor([[80.0, 80, 90, 90]] * 4), proposals[1], torch.tensor([[0.0, 0, 5, 5]])]
    rois, indices, labels, _ = select_training_samples(
        far, targets, Matcher(0.5, 0.5), BalancedPositiveNegativeSampler(16, 0.25), BoxCoder((10.0, 10.0, 5.0, 5.0))
    )
    assert labels[0].tolist() == [0, 0, 0, 0, 3, 1] and indices[0][-2:].tolist() == [0, 1]  # the gt boxes, last
    assert torch.equal(rois[0][-2:], targets[0]["boxes"])
    assert labels[1].tolist() == [0, 0, 0]  # no objects: all background, nothing added
    assert labels[2].tolist() == [0, 2]


def test_the_model_calls_the_box_head_components():
    """Training and inference run the heads' forwards and the training samples through components, so a
    learner's versions run in the model."""
    torch.manual_seed(0)
    model = maskrcnn_small()
    image, target = data.make_scene(seed=1, image_size=64, classes=data.CLASSES[1:])
    with components.recording() as ran:
        model.train()([image], [target])
    assert {"select_training_samples", "two_mlp_head", "fastrcnn_predictor"} <= set(ran)
