"""The exercises of stage 2, the backbone: residual_block and fpn_top_down (lesson 02)."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = ["check_residual_block", "check_fpn_top_down"]

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mrcnn_course.model import backbone
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake


def _randomize(module: nn.Module) -> nn.Module:
    """Random batch-norm statistics and biases, so that forgetting one of them shows; eval mode."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None  # track_running_stats
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.normal_(0, 0.1)
    return module.eval()


def _block_case(
    name: str, kind: type[nn.Module], in_channels: int, width: int, stride: int, x_shape: tuple, extra: bool = False
) -> Case:
    block = _randomize(kind(in_channels, width, stride))
    shortcut = "with downsample" if block.downsample is not None else "identity shortcut"
    out_channels = width * kind.expansion  # type: ignore[attr-defined]  # both blocks have it
    note = f"{kind.__name__} {in_channels} -> {out_channels} channels (width {width}), stride {stride}, {shortcut}"
    return Case(name, (block, torch.randn(x_shape)), notes={"block": note}, extra=extra)


def _residual_block_cases() -> list[Case]:
    basic, bottleneck = backbone.BasicBlock, backbone.Bottleneck
    return [
        _block_case("BasicBlock, same channels, stride 1: identity shortcut", basic, 8, 8, 1, (2, 8, 6, 6)),
        _block_case("BasicBlock, first of a stage: stride 2 and downsample", basic, 8, 16, 2, (1, 8, 9, 9)),
        _block_case("Bottleneck, same channels, stride 1: identity shortcut", bottleneck, 16, 4, 1, (1, 16, 8, 8)),
        _block_case(
            "Bottleneck, first of a stage: stride 2 (on the 3x3) and downsample", bottleneck, 16, 8, 2, (2, 16, 9, 9)
        ),
        _block_case(
            "Bottleneck, channels change at stride 1: downsample without stride", bottleneck, 8, 4, 1, (1, 8, 5, 6)
        ),
        _block_case("BasicBlock, batch of 3, non-square, odd size", basic, 4, 8, 2, (3, 4, 7, 12), extra=True),
        _block_case("Bottleneck, batch of 3, non-square, odd size", bottleneck, 16, 4, 2, (3, 16, 7, 12), extra=True),
        _block_case("a wider Bottleneck", bottleneck, 32, 16, 1, (1, 32, 4, 4), extra=True),
        _block_case("a 1 x 1 map through a BasicBlock", basic, 16, 16, 1, (2, 16, 1, 1), extra=True),
    ]


def _conv_bn_pairs(block) -> list:
    """The residual branch's (convolution, batch norm) pairs, in order: two in a BasicBlock, three in a Bottleneck."""
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    return pairs + [(block.conv3, block.bn3)] if isinstance(block, backbone.Bottleneck) else pairs


def _block_with(block, x, *, inner_relu=True, last_relu=True, relu_before_add=False, add=True, add_before_bn=False):
    """A residual block with one usual mistake (the keywords say which)."""
    shortcut = x if block.downsample is None else block.downsample(x)
    pairs, out = _conv_bn_pairs(block), x
    for conv, bn in pairs[:-1]:
        out = bn(conv(out))
        out = F.relu(out) if inner_relu else out
    conv, bn = pairs[-1]
    if add_before_bn:
        return F.relu(bn(conv(out) + shortcut))
    out = bn(conv(out))
    out = F.relu(out) if relu_before_add else out
    out = out + shortcut if add else out
    return F.relu(out) if last_relu else out


@exercise(
    cases=_residual_block_cases,
    hint="the branch: each convolution then its batch norm, with a ReLU after every pair but the last "
    "(two pairs in a BasicBlock, three in a Bottleneck, which has conv3); the shortcut is x, or "
    "block.downsample(x) when it is not None (the block changes the shape); return relu(branch + "
    "shortcut). Don't call block(x): that is the function you are writing.",
    steps=(
        "Tell the two kinds apart: a Bottleneck has a third convolution (conv3, bn3); "
        "isinstance(block, backbone.Bottleneck) says which.",
        "Run x through conv1 and bn1, then a ReLU (F.relu). The layers carry the stride: just call them.",
        "A BasicBlock: conv2 and bn2, with no ReLU yet. A Bottleneck: conv2, bn2 and a ReLU, then conv3 "
        "and bn3, with no ReLU yet.",
        "Choose the shortcut: x itself, unless the block has a downsample module, which maps x to the branch's shape.",
        "Add the branch and the shortcut, and only then apply the last ReLU.",
    ),
    mistakes=(
        Mistake(
            "the last ReLU is missing: it comes AFTER adding the shortcut.",
            lambda block, x: _block_with(block, x, last_relu=False),
        ),
        Mistake(
            "the ReLU came before the addition: add the shortcut to the last batch norm's output, then ReLU.",
            lambda block, x: _block_with(block, x, relu_before_add=True, last_relu=False),
        ),
        Mistake(
            "the shortcut was not added: return relu(branch + shortcut).",
            lambda block, x: _block_with(block, x, add=False),
        ),
        Mistake(
            "a ReLU follows every batch norm of the branch but the last (one in a BasicBlock, two in a Bottleneck).",
            lambda block, x: _block_with(block, x, inner_relu=False),
        ),
        Mistake(
            "the shortcut is added after the last batch norm, not between the last convolution and its batch norm.",
            lambda block, x: _block_with(block, x, add_before_bn=True),
        ),
    ),
    atol=1e-4,
    rtol=1e-4,
    torchvision_names=("torchvision.models.resnet.Bottleneck.forward", "torchvision.models.resnet.BasicBlock.forward"),
)
def check_residual_block(residual_block: Callable, extra: bool = False) -> None:
    """Check your residual_block(block, x) -> Tensor[N, C_out, H / stride, W / stride] against the reference, on
    BasicBlocks and Bottlenecks."""


def _fpn_case(
    name: str,
    channels: list[int],
    sizes: list[tuple[int, int]],
    out_channels: int = 8,
    batch: int = 1,
    extra: bool = False,
) -> Case:
    fpn = _randomize(backbone.FeaturePyramidNetwork(channels, out_channels))
    features = [torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes)]
    notes = {
        "lateral_convs": f"{len(channels)} 1x1 Conv2d: {', '.join(map(str, channels))} -> {out_channels} channels",
        "output_convs": f"{len(channels)} 3x3 Conv2d: {out_channels} -> {out_channels} channels",
    }
    return Case(name, (features, fpn.inner_blocks, fpn.layer_blocks), notes=notes, extra=extra)


def _fpn_cases() -> list[Case]:
    return [
        _fpn_case("square maps, batch of 2", [4, 8, 16, 32], [(16, 16), (8, 8), (4, 4), (2, 2)], batch=2),
        _fpn_case("odd sizes: upsample to the lateral's size", [4, 8, 16, 32], [(13, 9), (7, 5), (4, 3), (2, 2)]),
        _fpn_case("a 1 x 1 top level", [4, 8, 16, 32], [(8, 8), (4, 4), (2, 2), (1, 1)], out_channels=4),
        _fpn_case("three levels", [4, 8, 8], [(12, 12), (6, 6), (3, 3)], out_channels=6, extra=True),
        _fpn_case("odd top level: P6 rounds up", [4, 8, 16, 32], [(24, 40), (12, 20), (6, 10), (3, 5)], extra=True),
    ]


def _top_down(features, lateral_convs, output_convs, mode="nearest", smooth_in_path=False):
    """The pathway with one of two usual mistakes: bilinear upsampling, or the smoothed map sent down."""
    top_down = lateral_convs[-1](features[-1])
    if smooth_in_path:
        top_down = output_convs[-1](top_down)
    results = [top_down if smooth_in_path else output_convs[-1](top_down)]
    for level in range(len(features) - 2, -1, -1):
        lateral = lateral_convs[level](features[level])
        top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode=mode)
        if smooth_in_path:
            top_down = output_convs[level](top_down)
        results.insert(0, top_down if smooth_in_path else output_convs[level](top_down))
    return results + [F.max_pool2d(results[-1], kernel_size=1, stride=2)]


def _p6_from_c5(features, lateral_convs, output_convs):
    maps = backbone.fpn_top_down(features, lateral_convs, output_convs)
    return maps[:-1] + [F.max_pool2d(lateral_convs[-1](features[-1]), kernel_size=1, stride=2)]


@exercise(
    cases=_fpn_cases,
    hint="start at the coarsest level: top_down = lateral(C5), P5 = output(top_down); then for each finer "
    "level: top_down = lateral(C_l) + nearest upsampling of top_down to the lateral's size; P_l = "
    "output(top_down) (the 3x3 output is NOT sent down); P6 = max_pool2d(P5, kernel_size=1, stride=2); "
    "return [P2, ..., P5, P6], finest first.",
    steps=(
        "Start at the coarsest level: its lateral 1x1 convolution gives the running sum, and the 3x3 "
        "convolution of that sum is the coarsest P.",
        "Walk to the finer levels one by one, from the second coarsest down to the finest.",
        "At each level: the lateral of its C, plus the running sum upsampled (nearest) to exactly the "
        "lateral's height and width (F.interpolate with size=): that is the new running sum.",
        "That level's P is its 3x3 convolution of the running sum; keep the list finest first (insert at the front).",
        "Finally append P6: the coarsest P pooled with kernel 1 and stride 2.",
    ),
    mistakes=(
        Mistake(
            "P6 is missing: append max_pool2d(P5, kernel_size=1, stride=2).",
            lambda f, lat, out: backbone.fpn_top_down(f, lat, out)[:-1],
        ),
        Mistake(
            "the maps are in the wrong order: finest first, P6 last.",
            lambda f, lat, out: backbone.fpn_top_down(f, lat, out)[-2::-1] + backbone.fpn_top_down(f, lat, out)[-1:],
        ),
        Mistake(
            "upsampling is nearest neighbour (mode='nearest'), not bilinear.",
            lambda f, lat, out: _top_down(f, lat, out, mode="bilinear"),
        ),
        Mistake(
            "the 3x3 output convolution's result went down the pathway: only the sum (lateral + "
            "upsampled) goes down; the 3x3 makes that level's P map.",
            lambda f, lat, out: _top_down(f, lat, out, smooth_in_path=True),
        ),
        Mistake("P6 is pooled from P5 (after the 3x3 output conv), not from C5's lateral.", _p6_from_c5),
    ),
    atol=1e-4,
    rtol=1e-4,
    torchvision_names=("torchvision.ops.feature_pyramid_network.FeaturePyramidNetwork.forward",),
)
def check_fpn_top_down(fpn_top_down: Callable, extra: bool = False) -> None:
    """Check your fpn_top_down(features, lateral_convs, output_convs) -> [P2..P6] against the reference."""
