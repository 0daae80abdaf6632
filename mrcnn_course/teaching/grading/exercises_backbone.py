"""The exercises of stage 2, the backbone: bottleneck and fpn_top_down (lesson 02)."""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = ["check_bottleneck", "check_fpn_top_down"]

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


def _block_case(name: str, in_channels: int, width: int, stride: int, x_shape: tuple, extra: bool = False) -> Case:
    block = _randomize(backbone.Bottleneck(in_channels, width, stride))
    shortcut = "with downsample" if block.downsample is not None else "identity shortcut"
    note = f"Bottleneck {in_channels} -> {width * 4} channels (width {width}), stride {stride}, {shortcut}"
    return Case(name, (block, torch.randn(x_shape)), notes={"block": note}, extra=extra)


def _bottleneck_cases() -> list[Case]:
    return [
        _block_case("same channels, stride 1: identity shortcut", 16, 4, 1, (1, 16, 8, 8)),
        _block_case("first block of a stage: stride 2 and downsample", 16, 8, 2, (2, 16, 9, 9)),
        _block_case("channels change at stride 1: downsample without stride", 8, 4, 1, (1, 8, 5, 6)),
        _block_case("batch of 3, non-square, odd size", 16, 4, 2, (3, 16, 7, 12), extra=True),
        _block_case("a wider block", 32, 16, 1, (1, 32, 4, 4), extra=True),
    ]


def _residual_branch(block, x):
    out = F.relu(block.bn1(block.conv1(x)))
    out = F.relu(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out))


def _shortcut(block, x):
    return x if block.downsample is None else block.downsample(x)


@exercise(
    cases=_bottleneck_cases,
    hint="out = relu(bn1(conv1(x))); out = relu(bn2(conv2(out))); out = bn3(conv3(out)); the shortcut is x, "
    "or block.downsample(x) when it is not None; return relu(out + shortcut). Don't call block(x): "
    "that is the function you are writing.",
    steps=(
        "Run x through the first 1x1 convolution and its batch norm, then a ReLU (F.relu).",
        "The same with the 3x3 convolution (it carries the stride) and its batch norm, then a ReLU.",
        "Then the last 1x1 convolution and its batch norm, with no ReLU yet.",
        "Choose the shortcut: x itself, unless the block has a downsample module, which maps x to the branch's shape.",
        "Add the branch and the shortcut, and only then apply the last ReLU.",
    ),
    mistakes=(
        Mistake(
            "the last ReLU is missing: it comes AFTER adding the shortcut.",
            lambda block, x: _residual_branch(block, x) + _shortcut(block, x),
        ),
        Mistake(
            "the ReLU came before the addition: add the shortcut to bn3's output, then ReLU.",
            lambda block, x: F.relu(_residual_branch(block, x)) + _shortcut(block, x),
        ),
        Mistake(
            "the shortcut was not added: return relu(out + shortcut).",
            lambda block, x: F.relu(_residual_branch(block, x)),
        ),
    ),
    atol=1e-4,
    rtol=1e-4,
    torchvision_names=("torchvision.models.resnet.Bottleneck.forward",),
)
def check_bottleneck(bottleneck: Callable, extra: bool = False) -> None:
    """Check your bottleneck(block, x) -> Tensor[N, 4 * width, H / stride, W / stride] against the reference."""


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
