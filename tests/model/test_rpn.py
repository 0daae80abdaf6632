"""Stage 3 against torchvision: anchors, head layout, proposal filtering, matching, sampling, RPN losses."""

import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from mrcnn_course.model import torchvision_ops
from mrcnn_course.model.input_image import ImageList
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher
from mrcnn_course.model.rpn import (
    AnchorGenerator,
    RegionProposalNetwork,
    RPNHead,
    anchor_grid,
    cell_anchors,
    filter_proposals,
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


def test_rpn_head_has_torchvision_keys_and_outputs():
    ours, theirs = RPNHead(8, 3), TVRPNHead(8, 3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    maps = feature_maps(64, 64, channels=8)
    for a, b in zip(ours(maps), theirs(maps)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


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


@pytest.mark.parametrize("allow_low", [False, True])
def test_matcher_matches_torchvision(allow_low):
    iou = torch.rand(4, 50, generator=torch.Generator().manual_seed(1))
    iou[2, 7] = iou[2].max() + 0.001  # a tie-free best match
    ours = Matcher(0.7, 0.3, allow_low)(iou.clone())
    theirs = tv_det_utils.Matcher(0.7, 0.3, allow_low)(iou.clone())
    assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="No ground-truth boxes"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))


def test_sampler_draws_like_torchvision():
    labels = [torch.randint(-1, 3, (500,), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    torch.manual_seed(5)
    ours = BalancedPositiveNegativeSampler(64, 0.25)(labels)
    torch.manual_seed(5)
    theirs = tv_det_utils.BalancedPositiveNegativeSampler(64, 0.25)(labels)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


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
