"""Stage 3 against torchvision: anchors, head layout, proposal filtering, matching, sampling, RPN losses."""

import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.rpn import concat_box_prediction_layers

from mrcnn_course.model import components, torchvision_ops
from mrcnn_course.model.input_image import ImageList
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher, match_boxes, sample_balanced
from mrcnn_course.model.rpn import (
    AnchorGenerator,
    RegionProposalNetwork,
    RPNHead,
    anchor_grid,
    cell_anchors,
    filter_proposals,
    rpn_head,
    rpn_loss,
)

R50_SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5


@pytest.mark.parametrize("sizes, ratios", [((32,), (0.5, 1.0, 2.0)), ((8, 16), (0.25, 1.0)), ((45,), (1.0,))])
def test_cell_anchors_match_torchvision(sizes, ratios):
    assert torch.equal(cell_anchors(sizes, ratios), torchvision_ops.cell_anchors(sizes, ratios))


@pytest.mark.parametrize("grid, stride", [((1, 1), (32, 32)), ((13, 13), (61, 61)), ((7, 11), (16, 8))])
def test_anchor_grid_matches_torchvision(grid, stride):
    cell = cell_anchors((32,), (0.5, 1.0, 2.0))
    assert torch.equal(anchor_grid(cell, grid, stride), torchvision_ops.anchor_grid(cell, grid, stride))


def feature_maps(height: int, width: int, channels: int = 4, batch: int = 1) -> list[torch.Tensor]:
    """P2..P6 sizes for a padded batch of height x width (ceil division, as the convolutions give)."""
    maps, h, w = [], height, width
    for _ in range(5):
        h, w = -(-h // 2) if maps else -(-h // 4), -(-w // 2) if maps else -(-w // 4)
        maps.append(torch.randn(batch, channels, h, w))
    return maps


@pytest.mark.parametrize("padded", [(800, 800), (800, 1216), (64, 96)])
def test_anchor_generator_matches_torchvision(padded):
    maps = feature_maps(*padded)
    images = torch.zeros(2, 3, *padded)
    ours = AnchorGenerator(R50_SIZES, RATIOS)(ImageList(images, [padded, padded]), maps)
    theirs = TVAnchorGenerator(R50_SIZES, RATIOS)(TVImageList(images, [padded, padded]), maps)
    assert len(ours) == 2
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    if padded == (800, 800):
        assert len(ours[0]) == 3 * (200**2 + 100**2 + 50**2 + 25**2 + 13**2)  # 159,882


@pytest.mark.parametrize("height, width, batch", [(64, 64, 1), (96, 64, 2)])
def test_rpn_head_has_torchvision_keys_and_outputs_in_anchor_order(height, width, batch):
    """torchvision's head, then its concat_box_prediction_layers: the same numbers in the same order."""
    ours, theirs = RPNHead(8, 3), TVRPNHead(8, 3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for parameter in ours.parameters():  # larger than the init's 0.01, so that order and ReLU show
        parameter.data.normal_(0, 0.3)
    theirs.load_state_dict(ours.state_dict())
    maps = feature_maps(height, width, channels=8, batch=batch)
    objectness, pred_deltas = ours(maps)
    tv_objectness, tv_deltas = concat_box_prediction_layers(*theirs(maps))
    torch.testing.assert_close(objectness, tv_objectness.reshape(batch, -1))
    torch.testing.assert_close(pred_deltas, tv_deltas.reshape(batch, -1, 4))
    images = ImageList(torch.zeros(batch, 3, height, width), [(height, width)] * batch)
    anchors = AnchorGenerator(R50_SIZES, RATIOS)(images, maps)
    assert objectness.shape == (batch, len(anchors[0])) and pred_deltas.shape == (batch, len(anchors[0]), 4)


def test_rpn_head_is_the_component():
    head = RPNHead(4, 3)
    maps = feature_maps(32, 32)
    calls = []

    def mine(head, features):
        calls.append(head)
        return rpn_head(head, features)

    with components.using(rpn_head=mine):
        head(maps)
    assert calls == [head]


@pytest.mark.parametrize("pre, post", [(1000, 1000), (50, 20), (2, 1)])
def test_filter_proposals_matches_torchvision(pre, post):
    g = torch.Generator().manual_seed(0)
    levels = [300, 75, 20, 6, 2]
    n = sum(levels)
    xy = torch.rand(2, n, 2, generator=g) * 120 - 10  # some boxes partly outside the image
    proposals = torch.cat([xy, xy + torch.rand(2, n, 2, generator=g) * 40], dim=2)
    proposals[0, :5, 2:] = proposals[0, :5, :2]  # zero-area boxes must be dropped
    objectness = torch.randn(2 * n, generator=g)
    sizes = [(100, 90), (64, 120)]
    ours = filter_proposals(proposals, objectness, sizes, levels, pre, post, 0.7)
    theirs = torchvision_ops.filter_proposals(proposals, objectness, sizes, levels, pre, post, 0.7)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def iou_matrices() -> dict[str, torch.Tensor]:
    """Ordinary and edge-case IoU matrices (G, P)."""
    g = torch.Generator().manual_seed(1)
    ordinary = torch.rand(4, 50, generator=g)
    ordinary[2, 7] = ordinary[2].max() + 0.001
    tied = torch.rand(3, 20, generator=g) * 0.5
    tied[0, [3, 9, 15]] = 0.6  # gt 0's highest IoU, three times
    tied[1, 9] = 0.65  # prediction 9 prefers gt 1, although it is one of gt 0's best
    exact = torch.tensor([[0.7, 0.3, 0.5, 0.2999], [0.1, 0.2, 0.6999, 0.1]])
    return {
        "ordinary": ordinary,
        "ties and a best prediction that prefers another gt": tied,
        "all equal": torch.full((2, 6), 0.4),
        "one gt": torch.rand(1, 30, generator=g),
        "IoU exactly at the thresholds": exact,
        "nothing overlaps": torch.zeros(2, 5),
    }


@pytest.mark.parametrize("thresholds", [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.5, False), (0.5, 0.5, True)])
@pytest.mark.parametrize("name, iou", iou_matrices().items())
def test_matcher_matches_torchvision(thresholds, name, iou):
    ours = Matcher(*thresholds)(iou.clone())
    theirs = tv_det_utils.Matcher(*thresholds)(iou.clone())
    assert ours.dtype == torch.int64 and torch.equal(ours, theirs), name


def test_matcher_is_the_component_and_refuses_an_empty_matrix():
    matcher, iou = Matcher(0.7, 0.3, True), torch.rand(2, 4)
    with components.using(match_boxes=lambda m, q: torch.full((q.shape[1],), 7)):
        assert matcher(iou).tolist() == [7] * 4
    assert torch.equal(matcher(iou), match_boxes(matcher, iou))
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="No proposals"):
        Matcher(0.7, 0.3)(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="low_threshold 0.8 must be <= high_threshold 0.5"):
        Matcher(0.5, 0.8)


def label_sets() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        "ordinary": torch.randint(-1, 3, (500,), generator=g),
        "fewer positives than asked": torch.tensor([1] * 3 + [0] * 400 + [-1] * 50)[torch.randperm(453, generator=g)],
        "no positives (an image without objects)": torch.zeros(300, dtype=torch.int64),
        "fewer elements than the batch": torch.tensor([1, 0, -1, 0, 2]),
        "all ignored": torch.full((40,), -1),
    }


@pytest.mark.parametrize("size, fraction", [(256, 0.5), (512, 0.25), (64, 0.25), (7, 0.5)])
@pytest.mark.parametrize("name, labels", label_sets().items())
def test_sampler_draws_like_torchvision(size, fraction, name, labels):
    """With torch's default generator (as in the model) and with a generator of its own (as in the lesson)."""
    torch.manual_seed(5)
    ours = BalancedPositiveNegativeSampler(size, fraction)([labels, labels.flip(0)])
    torch.manual_seed(5)
    theirs = tv_det_utils.BalancedPositiveNegativeSampler(size, fraction)([labels, labels.flip(0)])
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert x.dtype == torch.uint8 and torch.equal(x, y), name
    generator = torch.Generator().manual_seed(9)
    sampler = BalancedPositiveNegativeSampler(size, fraction)
    mine = sample_balanced(sampler, labels, generator)
    again = torchvision_ops.sample_balanced(sampler, labels, torch.Generator().manual_seed(9))
    assert all(torch.equal(x, y) for x, y in zip(mine, again)), name


def test_the_sampler_draws_from_the_generator_it_is_given():
    labels = [torch.randint(-1, 2, (200,), generator=torch.Generator().manual_seed(3))]
    sampler = BalancedPositiveNegativeSampler(32, 0.5)
    first = sampler(labels, torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the default generator plays no part
    second = sampler(labels, torch.Generator().manual_seed(1))
    other = sampler(labels, torch.Generator().manual_seed(2))
    assert torch.equal(first[0][0], second[0][0]) and torch.equal(first[1][0], second[1][0])
    assert not torch.equal(first[1][0], other[1][0])
    assert int(first[0][0].sum()) == 16 and int(first[1][0].sum()) == 16


def loss_inputs(batch: int = 2, anchors: int = 60, positives: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(-1, 1, (anchors,), generator=g).float() for _ in range(batch)]
    for i, l in enumerate(labels):
        l[: positives * (i == 0)] = 1.0  # the second image has no objects
    sampler = BalancedPositiveNegativeSampler(16, 0.5)
    positive, negative = sampler(labels, g)
    return (
        torch.randn(batch, anchors, generator=g, requires_grad=True),
        torch.randn(batch, anchors, 4, generator=g, requires_grad=True),
        labels,
        [torch.randn(anchors, 4, generator=g) for _ in range(batch)],
        positive,
        negative,
    )


@pytest.mark.parametrize("positives", [0, 5, 40])
def test_rpn_loss_matches_torchvision_compute_loss(positives):
    args = loss_inputs(positives=positives)
    ours = rpn_loss(*args)
    theirs = torchvision_ops.rpn_loss(*args)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    ours[0].backward()  # the loss reaches the logits it was computed from
    assert args[0].grad is not None


def make_rpns():
    head = RPNHead(4, 3)
    kwargs = dict(
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=64,
        positive_fraction=0.5,
        pre_nms_top_n={"training": 300, "testing": 200},
        post_nms_top_n={"training": 150, "testing": 100},
        nms_thresh=0.7,
    )
    sizes = ((8,), (16,), (32,), (64,), (128,))
    ours = RegionProposalNetwork(AnchorGenerator(sizes, RATIOS), head, **kwargs)
    theirs = TVRPN(TVAnchorGenerator(sizes, RATIOS), TVRPNHead(4, 3), **kwargs)
    theirs.head.load_state_dict(head.state_dict())
    return ours, theirs


@pytest.mark.parametrize("training", [False, True])
def test_rpn_proposals_and_losses_match_torchvision(training):
    ours, theirs = make_rpns()
    ours.train(training), theirs.train(training)
    maps = feature_maps(128, 96, batch=2)
    features = {str(i): m for i, m in enumerate(maps)}
    sizes = [(128, 90), (100, 96)]
    images = torch.zeros(2, 3, 128, 96)
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 60], [30, 40, 90, 120]])},
        {"boxes": torch.zeros((0, 4))},
    ]  # an image with no objects: all anchors background
    torch.manual_seed(7)
    our_boxes, our_losses = ours(ImageList(images, sizes), features, targets if training else None)
    torch.manual_seed(7)
    tv_boxes, tv_losses = theirs(TVImageList(images, sizes), features, targets if training else None)
    for a, b in zip(our_boxes, tv_boxes):
        torch.testing.assert_close(a, b)
    assert our_losses.keys() == tv_losses.keys()
    for k in tv_losses:
        torch.testing.assert_close(our_losses[k], tv_losses[k])
