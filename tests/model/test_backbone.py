"""Stage 2 against torchvision: residual blocks (basic, bottleneck), FPN top-down, R-50-FPN, frozen batch norm."""

from collections import OrderedDict

import pytest
import torch
from torchvision.models import resnet50
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.resnet import BasicBlock as TVBasicBlock
from torchvision.models.resnet import Bottleneck as TVBottleneck
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork as TVFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mrcnn_course.model import components
from mrcnn_course.model.backbone import (
    BackboneWithFPN,
    BasicBlock,
    Bottleneck,
    FeaturePyramidNetwork,
    ResNetConfig,
    fpn_top_down,
    residual_block,
)

BLOCKS = [
    (Bottleneck, TVBottleneck, 64, 64, 1),
    (Bottleneck, TVBottleneck, 256, 64, 1),
    (Bottleneck, TVBottleneck, 256, 128, 2),
    (BasicBlock, TVBasicBlock, 32, 32, 1),
    (BasicBlock, TVBasicBlock, 32, 64, 2),
    (BasicBlock, TVBasicBlock, 16, 32, 1),
]


@pytest.mark.parametrize("ours_class, theirs_class, in_channels, width, stride", BLOCKS)
def test_residual_block_matches_torchvisions_blocks(ours_class, theirs_class, in_channels, width, stride):
    ours = ours_class(in_channels, width, stride).eval()
    out_channels = width * ours_class.expansion
    downsample = None
    if ours.downsample is not None:
        downsample = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), torch.nn.BatchNorm2d(out_channels)
        )
    theirs = theirs_class(in_channels, width, stride, downsample).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, in_channels, 15, 17)  # odd sizes: the stride-2 conv rounds up
    torch.testing.assert_close(residual_block(ours, x), theirs(x))
    torch.testing.assert_close(ours(x), theirs(x))
    strided = ours.conv2 if ours_class is Bottleneck else ours.conv1  # ResNet v1.5: a bottleneck's 3x3
    assert strided.stride == (stride, stride) and ours.conv1.kernel_size == (1 if ours_class is Bottleneck else 3,) * 2


def test_both_blocks_run_the_residual_block_component():
    """The small model is made of BasicBlocks: the learner's residual_block runs in it (and in the capstone)."""
    calls = []

    def counted(block, x):
        calls.append(type(block).__name__)
        return residual_block(block, x)

    x = torch.randn(1, 8, 6, 6)
    with components.using(residual_block=counted):
        BasicBlock(8, 8).eval()(x)
        Bottleneck(8, 2).eval()(x)
    assert calls == ["BasicBlock", "Bottleneck"]


@pytest.mark.parametrize("size", [(64, 64), (50, 38), (13, 7)])
def test_fpn_top_down_matches_torchvision(size):
    channels = [8, 16, 32, 64]
    ours = FeaturePyramidNetwork(channels, 12)
    theirs = TVFPN(channels, 12, extra_blocks=LastLevelMaxPool())
    theirs.load_state_dict(ours.state_dict())
    h, w = size
    feats = [torch.randn(2, c, -(-h // 2**i), -(-w // 2**i)) for i, c in enumerate(channels)]
    expected = list(theirs(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
    got = fpn_top_down(feats, ours.inner_blocks, ours.layer_blocks)
    assert len(got) == 5, "P2..P5 and the extra P6"
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def torchvision_r50_fpn(frozen: bool):
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if frozen else torch.nn.BatchNorm2d)
    return _resnet_fpn_extractor(body, 5)


def test_resnet50_fpn_matches_torchvision_and_names_levels_like_it():
    theirs = torchvision_r50_fpn(frozen=False).eval()
    ours = BackboneWithFPN(ResNetConfig(), 256).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    # ours computes in channels-last order (oneDNN's layout), which rounds differently from the default order
    # (torchvision's own backbone differs from itself by up to 7e-4 on these maps of ~200): compare like with like
    theirs = theirs.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 160)
    with torch.no_grad():
        got, expected = ours(x), theirs(x)
    assert list(got) == ["0", "1", "2", "3", "pool"] == list(expected)
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)
    assert got["2"].shape == (1, 256, 14, 10)  # P4: stride 16


def test_frozen_batchnorm_checkpoint_loads_strictly():
    """torchvision's COCO checkpoint uses FrozenBatchNorm2d: no num_batches_tracked keys."""
    frozen = torchvision_r50_fpn(frozen=True).eval()
    for m in frozen.modules():  # non-trivial statistics, so that a mismatch would show
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
    state = frozen.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in state)
    ours = BackboneWithFPN(ResNetConfig(), 256).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        for g, e in zip(ours(x).values(), frozen(x).values()):
            # activations reach ~2000 with these statistics: compare relative to their scale
            # (frozen BN computes x * scale + shift, BN (x - mean) / std * w + b: rounding differs)
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * e.abs().max().item())


def test_small_basic_block_backbone_shapes():
    config = ResNetConfig(block=BasicBlock, layers=(2, 2, 2, 2), widths=(32, 64, 128, 256), stem_channels=32)
    maps = BackboneWithFPN(config, 64)(torch.randn(2, 3, 128, 96))
    assert [tuple(m.shape) for m in maps.values()] == [
        (2, 64, 32, 24),
        (2, 64, 16, 12),
        (2, 64, 8, 6),
        (2, 64, 4, 3),
        (2, 64, 2, 2),
    ]
