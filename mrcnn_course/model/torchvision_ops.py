"""torchvision's versions of the components, with the components' signatures.

Imported only when asked for (components.use_torchvision() or components.use(name, "torchvision")),
and by the tests, which use these as the oracle. Each function calls torchvision's own code; where
torchvision keeps the step inside a method, the method is called on a minimal object holding the
attributes it reads.
"""

from collections import OrderedDict
from types import SimpleNamespace

import torch
import torchvision
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection import transform as tv_transform
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVFastRCNNPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads as TVMaskRCNNHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TVMaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.resnet import BasicBlock as TVBasicBlock
from torchvision.models.resnet import Bottleneck as TVBottleneck
from torchvision.ops import boxes as tv_boxes
from torchvision.ops import poolers as tv_poolers
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from mrcnn_course.model.box_ops import BBOX_XFORM_CLIP


def resize(image, min_size, max_size, target=None):
    height, width = image.shape[-2:]
    target = dict(target) if target is not None else None
    image, target = tv_transform._resize_image_and_masks(image, min_size, max_size, target)
    if target is not None and "boxes" in target:
        target["boxes"] = tv_transform.resize_boxes(target["boxes"], (height, width), image.shape[-2:])
    return image, target


def resize_boxes(boxes, original_size, new_size):
    return tv_transform.resize_boxes(boxes, list(original_size), list(new_size))


def batch_images(images, size_divisible=32):
    holder = SimpleNamespace(max_by_axis=lambda lists: tv_transform.GeneralizedRCNNTransform.max_by_axis(None, lists))
    return tv_transform.GeneralizedRCNNTransform.batch_images(holder, list(images), size_divisible)


def cell_anchors(sizes, aspect_ratios):
    return TVAnchorGenerator.generate_anchors(None, list(sizes), list(aspect_ratios))


def anchor_grid(cell, grid_size, stride):
    holder = SimpleNamespace(cell_anchors=[cell])
    strides = [[torch.tensor(stride[0]), torch.tensor(stride[1])]]
    return TVAnchorGenerator.grid_anchors(holder, [list(grid_size)], strides)[0]


def rpn_head(head, features):
    """torchvision's RPNHead.forward on this head's layers (its 3x3 conv followed by the ReLU torchvision's
    Conv2dNormActivation holds), flattened by torchvision's concat_box_prediction_layers."""
    holder = SimpleNamespace(
        conv=torch.nn.Sequential(head.conv, torch.nn.ReLU()), cls_logits=head.cls_logits, bbox_pred=head.bbox_pred
    )
    logits, deltas = TVRPNHead.forward(holder, features)
    objectness, pred_deltas = concat_box_prediction_layers(logits, deltas)  # (N * R, 1), (N * R, 4)
    num_images = len(features[0])
    return objectness.reshape(num_images, -1), pred_deltas.reshape(num_images, -1, 4)


def encode_boxes(reference_boxes, proposals, weights):
    return det_utils.BoxCoder(weights).encode_single(reference_boxes, proposals)


def decode_boxes(deltas, boxes, weights, clip=BBOX_XFORM_CLIP):
    decoded = det_utils.BoxCoder(weights, clip).decode_single(deltas, boxes)  # (N, 4 * C)
    return decoded.reshape(len(boxes), deltas.shape[-1] // 4, 4)  # (N, C, 4), N may be 0


box_iou = tv_boxes.box_iou
clip_boxes_to_image = tv_boxes.clip_boxes_to_image
remove_small_boxes = tv_boxes.remove_small_boxes
nms = tv_boxes.nms
batched_nms = tv_boxes.batched_nms


def filter_proposals(
    proposals,
    objectness,
    image_sizes,
    num_anchors_per_level,
    pre_nms_top_n,
    post_nms_top_n,
    nms_thresh,
    min_size=1e-3,
    score_thresh=0.0,
):
    holder = SimpleNamespace(
        pre_nms_top_n=lambda: pre_nms_top_n,
        post_nms_top_n=lambda: post_nms_top_n,
        nms_thresh=nms_thresh,
        score_thresh=score_thresh,
        min_size=min_size,
    )
    holder._get_top_n_idx = lambda ob, levels: TVRegionProposalNetwork._get_top_n_idx(holder, ob, levels)
    return TVRegionProposalNetwork.filter_proposals(holder, proposals, objectness, image_sizes, num_anchors_per_level)


def match_boxes(matcher, match_quality_matrix):
    tv_matcher = det_utils.Matcher(matcher.high_threshold, matcher.low_threshold, matcher.allow_low_quality_matches)
    return tv_matcher(match_quality_matrix)


def sample_balanced(sampler, labels, generator):
    """torchvision's sampler draws from torch's default generator: lend it `generator`'s state, and give
    `generator` the state the draws leave, as drawing from it would."""
    tv_sampler = det_utils.BalancedPositiveNegativeSampler(sampler.batch_size_per_image, sampler.positive_fraction)
    if generator is None:
        positive, negative = tv_sampler([labels])
        return positive[0], negative[0]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(generator.get_state())
        positive, negative = tv_sampler([labels])
        generator.set_state(torch.default_generator.get_state())
    return positive[0], negative[0]


def rpn_loss(objectness, pred_deltas, labels, regression_targets, sampled_positive, sampled_negative):
    holder = SimpleNamespace(fg_bg_sampler=lambda labels: (sampled_positive, sampled_negative))
    return TVRegionProposalNetwork.compute_loss(
        holder, objectness.reshape(-1, 1), pred_deltas.reshape(-1, 4), labels, regression_targets
    )


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)


def map_levels(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    return tv_poolers.LevelMapper(k_min, k_max, canonical_scale, canonical_level, eps)(boxes)


def two_mlp_head(head, x):
    """torchvision's TwoMLPHead.forward run on this head's layers."""
    return TVTwoMLPHead.forward(head, x)


def fastrcnn_predictor(predictor, x):
    """torchvision's FastRCNNPredictor.forward run on this predictor's layers."""
    return TVFastRCNNPredictor.forward(predictor, x)


def select_training_samples(proposals, targets, matcher, sampler, box_coder, generator=None):
    """torchvision's RoIHeads.select_training_samples with these settings, its sampler drawing from
    `generator` (sample_balanced, image by image: the same draws in the same order)."""
    heads = tv_roi_heads.RoIHeads(
        None, None, None, matcher.high_threshold, matcher.low_threshold, sampler.batch_size_per_image,
        sampler.positive_fraction, box_coder.weights, 0.05, 0.5, 100,
    )  # fmt: skip
    heads.proposal_matcher = det_utils.Matcher(
        matcher.high_threshold, matcher.low_threshold, matcher.allow_low_quality_matches
    )

    def draw(labels):
        masks = [sample_balanced(sampler, labels_in_image, generator) for labels_in_image in labels]
        return [positive for positive, _ in masks], [negative for _, negative in masks]

    heads.fg_bg_sampler = draw
    return heads.select_training_samples(proposals, targets)


fastrcnn_loss = tv_roi_heads.fastrcnn_loss


def postprocess_detections(
    class_logits,
    box_regression,
    proposals,
    image_sizes,
    score_thresh=0.05,
    nms_thresh=0.5,
    detections_per_img=100,
    weights=(10.0, 10.0, 5.0, 5.0),
):
    holder = SimpleNamespace(
        box_coder=det_utils.BoxCoder(weights),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    return tv_roi_heads.RoIHeads.postprocess_detections(holder, class_logits, box_regression, proposals, image_sizes)


def _with_weights_of(module: torch.nn.Module, build) -> torch.nn.Module:
    """torchvision's module made by build(), with `module`'s weights (the same state_dict keys) and dtype.
    Built with torch's generator forked: initialising its weights must not shift the caller's random draws."""
    with torch.random.fork_rng(devices=[]):
        theirs = build()
    theirs.to(next(module.parameters()).dtype).load_state_dict(module.state_dict())
    return theirs


def maskrcnn_heads(head, features):
    """torchvision's MaskRCNNHeads (its convolutions and their ReLUs) with this head's weights."""
    convs = head.convs
    widths = [conv.out_channels for conv in convs]
    return _with_weights_of(head, lambda: TVMaskRCNNHeads(convs[0].in_channels, widths, 1))(features)


def maskrcnn_predictor(predictor, x):
    """torchvision's MaskRCNNPredictor with this predictor's weights."""
    up, logits = predictor.conv5_mask, predictor.mask_fcn_logits
    return _with_weights_of(
        predictor, lambda: TVMaskRCNNPredictor(up.in_channels, up.out_channels, logits.out_channels)
    )(x)


project_masks_on_boxes = tv_roi_heads.project_masks_on_boxes
maskrcnn_loss = tv_roi_heads.maskrcnn_loss
paste_masks_in_image = tv_roi_heads.paste_masks_in_image


def fpn_top_down(features: list[Tensor], lateral_convs, output_convs) -> list[Tensor]:
    """torchvision's FeaturePyramidNetwork.forward (with LastLevelMaxPool) run with these convolutions.

    Called on a holder rather than a new FeaturePyramidNetwork: building one would initialise
    weights and so draw from torch's generator, shifting every later random draw.
    """
    holder = SimpleNamespace(inner_blocks=lateral_convs, layer_blocks=output_convs, extra_blocks=LastLevelMaxPool())
    holder.get_result_from_inner_blocks = lambda x, i: FeaturePyramidNetwork.get_result_from_inner_blocks(holder, x, i)
    holder.get_result_from_layer_blocks = lambda x, i: FeaturePyramidNetwork.get_result_from_layer_blocks(holder, x, i)
    maps = FeaturePyramidNetwork.forward(holder, OrderedDict((str(i), f) for i, f in enumerate(features)))
    return list(maps.values())


def residual_block(block, x):
    """torchvision's ResNet Bottleneck.forward or BasicBlock.forward (a block with conv3 is a bottleneck), run
    on this block's layers."""
    names = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
    layers = {name: getattr(block, name) for name in names if hasattr(block, name)}
    holder = SimpleNamespace(**layers, relu=torch.nn.ReLU(), downsample=block.downsample)
    return (TVBottleneck if "conv3" in layers else TVBasicBlock).forward(holder, x)


class _SmallBackbone(torch.nn.Module):
    """The small configuration's ResNet body with torchvision's FPN on top (keys body.*, fpn.*, as ours)."""

    def __init__(self, config):
        super().__init__()
        from mrcnn_course.model.backbone import ResNetBody

        self.body = ResNetBody(config.backbone)
        self.fpn = FeaturePyramidNetwork(
            config.backbone.out_channels, config.fpn_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = config.fpn_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.fpn(OrderedDict((str(i), c) for i, c in enumerate(self.body(x))))


def torchvision_maskrcnn_small(num_classes: int = 6, config=None):
    """torchvision's MaskRCNN built with the course's small configuration (SmallConfig).

    Same backbone shape, anchors, heads, sizes and thresholds, and the same state_dict keys as
    mrcnn_course.model.maskrcnn.maskrcnn_small, so the two can be compared (speed, training) weight for weight.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from mrcnn_course.model.maskrcnn import SmallConfig

    config = config or SmallConfig()
    kwargs = config.model_kwargs()
    sizes, layers = kwargs.pop("anchor_sizes"), tuple(kwargs.pop("mask_layers"))
    dim, representation = kwargs.pop("mask_dim_reduced"), kwargs.pop("representation_size")
    channels = config.fpn_channels
    return MaskRCNN(
        _SmallBackbone(config),
        None,
        **kwargs,  # None: the predictors below fix the classes
        rpn_anchor_generator=TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        box_head=TwoMLPHead(channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        mask_head=MaskRCNNHeads(channels, list(layers), 1),
        mask_predictor=MaskRCNNPredictor(layers[-1], dim, num_classes),
    )
