"""Stage 2, the backbone CNN: a ResNet and a Feature Pyramid Network (FPN) on top of it.

Shapes:
    N          images
    C2..C5     ResNet stage outputs at strides 4, 8, 16, 32 (256, 512, 1024, 2048 channels in R-50)
    P2..P6     FPN maps, all with the same channels (256 in R-50), strides 4 to 64

For a 1x3x800x800 batch and R-50: C4 is 1x1024x50x50, the stride-16 map a single-scale Faster R-CNN
reads. The FPN gives P2 1x256x200x200, P3 100x100, P4 50x50 (C4's stride, 256 channels), P5 25x25,
P6 13x13, in an ordered dict keyed "0", "1", "2", "3", "pool", as in torchvision, so the state_dict
keys are the same.

Left out: dilation, group convolution (ResNeXt), frozen layers for fine-tuning a pretrained backbone.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that also loads state_dicts saved from torchvision's FrozenBatchNorm2d.

    torchvision's COCO checkpoint stores frozen batch norm without num_batches_tracked; filling it in
    lets that checkpoint load with strict=True. In eval mode both compute the same affine map.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> tuple[nn.Conv2d, BatchNorm2d]:
    """A bias-free convolution (padding keeps the size at stride 1) and its batch norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
    return conv, BatchNorm2d(out_channels)


def residual_block(block: "BasicBlock | Bottleneck", x: Tensor) -> Tensor:
    """A residual block's forward pass, for both kinds of block (He et al. 2016, Fig. 5).

    The residual branch: each convolution followed by its batch norm, with a ReLU after every one but
    the last. A BasicBlock has two 3x3 convolutions (conv1, conv2); a Bottleneck has three: a 1x1 that
    reduces the channels, a 3x3 at the reduced width, a 1x1 that expands them 4x (conv1, conv2, conv3).
    The shortcut is x itself, or block.downsample(x) (a strided 1x1 convolution and its batch norm)
    when the block changes the shape. The block's output is ReLU(branch + shortcut): the last ReLU
    comes after the addition.

    The stride sits on the 3x3 convolution (conv2) in a Bottleneck, on conv1 in a BasicBlock: the
    layers carry it, so this function never names it. The original ResNet-50 (He et al.'s released
    models) put it on the first 1x1; torchvision moved it to the 3x3 ("ResNet v1.5"): a strided 1x1
    reads one pixel in four, a strided 3x3 reads them all.

    Args:
        block: holds conv1, bn1, conv2, bn2 (and conv3, bn3 in a Bottleneck) and downsample (a module or None)
        x (Tensor[N, C_in, H, W])
    Returns:
        Tensor[N, C_out, H / stride, W / stride], C_out = width * block.expansion
    """
    shortcut = x if block.downsample is None else block.downsample(x)
    out = F.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = F.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3, 1x1 expand (x4), plus a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1, self.bn1 = conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride)  # stride on the 3x3, as torchvision (v1.5)
        self.conv3, self.bn3 = conv_bn(width, out_channels, 1)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride))

    def forward(self, x: Tensor) -> Tensor:
        return components.residual_block(self, x)


class BasicBlock(nn.Module):
    """The small ResNets' block: two 3x3 convolutions plus a shortcut (no channel expansion)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, width, 3, stride)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.downsample = None
        if stride != 1 or in_channels != width:
            self.downsample = nn.Sequential(*conv_bn(in_channels, width, 1, stride))

    def forward(self, x: Tensor) -> Tensor:
        return components.residual_block(self, x)


@dataclass
class ResNetConfig:
    """A ResNet's shape. The defaults are ResNet-50 (He et al. 2016, Table 1)."""

    block: type[Bottleneck] | type[BasicBlock] = Bottleneck
    layers: tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage (conv2_x .. conv5_x)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # 3x3 width per stage; outputs are width * expansion
    stem_channels: int = 64  # the 7x7 stride-2 convolution's output

    @property
    def out_channels(self) -> list[int]:
        return [w * self.block.expansion for w in self.widths]


class ResNetBody(nn.Module):
    """A ResNet without its classifier: returns C2..C5 (strides 4, 8, 16, 32)."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, config.stem_channels, 7, stride=2)
        in_channels = config.stem_channels
        for index, (num_blocks, width) in enumerate(zip(config.layers, config.widths)):
            stride = 1 if index == 0 else 2  # conv2_x keeps the stem's stride 4; the others halve
            blocks = []
            for b in range(num_blocks):
                blocks.append(config.block(in_channels, width, stride if b == 0 else 1))
                in_channels = width * config.block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(config.layers)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                if m.bias is not None:  # every convolution here has one
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))  # (N, stem, H/2, W/2)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # (N, stem, H/4, W/4)
        outputs = []
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
            outputs.append(x)  # C2 (N, c2, H/4, W/4) ... C5 (N, c5, H/32, W/32)
        return outputs


def conv_with_bias(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """A convolution wrapped in a Sequential, so its keys read "...0.weight" like torchvision's FPN."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))


def fpn_top_down(features: list[Tensor], lateral_convs: nn.ModuleList, output_convs: nn.ModuleList) -> list[Tensor]:
    """The FPN's top-down pathway and lateral connections (FPN paper, Fig. 3), plus P6.

    Args:
        features: C2..C5, Tensor[N, c_i, H_i, W_i], finest first
        lateral_convs: one 1x1 convolution per level, c_i -> D channels
        output_convs: one 3x3 convolution per level, D -> D (reduces upsampling's aliasing)
    Returns:
        P2..P6: Tensor[N, D, H_i, W_i], finest first; P6 is P5 subsampled by 2 (max pool, kernel 1)

    Start from the coarsest level; at each finer level, upsample the running map to its size
    (nearest neighbour), add the lateral 1x1 of that level, and smooth the sum with the 3x3.
    """
    top_down = lateral_convs[-1](features[-1])
    results = [output_convs[-1](top_down)]
    for level in range(len(features) - 2, -1, -1):
        lateral = lateral_convs[level](features[level])
        upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")  # sizes may be odd
        top_down = lateral + upsampled
        results.insert(0, output_convs[level](top_down))
    results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))  # P6, for the RPN only
    return results


class FeaturePyramidNetwork(nn.Module):
    """Lateral 1x1 and output 3x3 convolutions per level; the wiring is fpn_top_down."""

    def __init__(self, in_channels_list: list[int], out_channels: int):
        super().__init__()
        self.inner_blocks = nn.ModuleList([conv_with_bias(c, out_channels, 1) for c in in_channels_list])
        self.layer_blocks = nn.ModuleList([conv_with_bias(out_channels, out_channels, 3) for _ in in_channels_list])
        for m in self.modules():  # torchvision's FPN initialisation: kaiming_uniform(a=1), zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:  # every convolution here has one
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return components.fpn_top_down(features, self.inner_blocks, self.layer_blocks)


class BackboneWithFPN(nn.Module):
    """ResNet body + FPN: a batch Tensor[N, 3, Hp, Wp] -> OrderedDict of P2..P6 (keys "0".."3", "pool")."""

    def __init__(self, config: ResNetConfig, fpn_channels: int):
        super().__init__()
        self.body = ResNetBody(config)
        self.fpn = FeaturePyramidNetwork(config.out_channels, fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        """The FPN maps of a batch, computed in channels-last memory order (the layout oneDNN's CPU
        convolutions work in: less time in the backbone, forward and backward, for the same numbers up to
        rounding; measured in benchmarks/TUNING.md, "What made the step cheaper"). The maps keep that layout;
        shapes are as usual."""
        maps = self.fpn(self.body(images.contiguous(memory_format=torch.channels_last)))
        names = [str(i) for i in range(len(maps) - 1)] + ["pool"]
        return OrderedDict(zip(names, maps))
