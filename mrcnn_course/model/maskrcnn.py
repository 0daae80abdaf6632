"""The assembled Mask R-CNN: six stages in order, torchvision's configuration and state_dict keys.

    model = maskrcnn_resnet50_fpn(num_classes=91)     # torchvision's configuration
    model = maskrcnn_small(num_classes=6)              # trains on a laptop CPU in minutes
    model.eval(); detections = model([image])          # list of dicts: boxes, labels, scores, masks
    model.train(); losses = model([image], [target])   # dict of the five losses
    trace = model.trace(image)                         # what each stage took and gave

Shapes:
    N   images;  C classes including background;  T detections per image;  H, W an original image size

Calling convention, keyword names and state_dict keys are torchvision's, so a torchvision
MaskRCNN's state_dict loads here and the two can be compared line by line.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.backbone import BackboneWithFPN, BasicBlock, ResNetConfig
from mrcnn_course.model.box_head import FastRCNNPredictor, TwoMLPHead
from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.input_checks import check_images_and_targets
from mrcnn_course.model.input_image import IMAGENET_MEAN, IMAGENET_STD, GeneralizedRCNNTransform
from mrcnn_course.model.mask_head import MaskRCNNHeads, MaskRCNNPredictor, paste_masks_within_memory, select_class_masks
from mrcnn_course.model.matching import BalancedPositiveNegativeSampler, Matcher
from mrcnn_course.model.prediction_trace import PredictionTrace, record_trace
from mrcnn_course.model.roi_align import MultiScaleRoIAlign
from mrcnn_course.model.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead

FPN_LEVELS = ["0", "1", "2", "3"]  # P2..P5: the levels RoI Align reads (P6 is for the RPN only)


class RoIHeads(nn.Module):
    """Stages 4 to 6 on the proposals: RoI Align, the box & classifier head, the mask head.

    forward(features, proposals, image_sizes, targets) gives the detections (eval) or the heads' three
    losses (training); each path reads as the three stages in order (detect, losses). The parts keep
    torchvision's names, so the state_dict keys read roi_heads.box_head.*, roi_heads.mask_head.*, ...
    Shapes: K proposals (RoIs) per image, C classes, T detections per image, P positive RoIs.
    """

    def __init__(
        self,
        *,
        fpn_channels: int,
        num_classes: int,
        representation_size: int,
        mask_layers: tuple[int, ...],
        mask_dim_reduced: int,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
    ):
        super().__init__()
        self.box_roi_pool = MultiScaleRoIAlign(FPN_LEVELS, 7, sampling_ratio=2)  # stage 4, for stage 5
        self.box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)  # stage 5
        self.box_predictor = FastRCNNPredictor(representation_size, num_classes)
        self.mask_roi_pool = MultiScaleRoIAlign(FPN_LEVELS, 14, sampling_ratio=2)  # stage 4, for stage 6
        self.mask_head = MaskRCNNHeads(fpn_channels, mask_layers)  # stage 6
        self.mask_predictor = MaskRCNNPredictor(mask_layers[-1], mask_dim_reduced, num_classes)
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.bbox_reg_weights = bbox_reg_weights or (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's target scaling
        self.box_coder = BoxCoder(self.bbox_reg_weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Eval: per image {boxes (T, 4), labels (T,), scores (T,), masks (T, 1, 28, 28) probabilities}.
        Training: {"loss_classifier", "loss_box_reg", "loss_mask"}."""
        if self.training:
            assert targets is not None, "training needs targets (MaskRCNN.forward checks them first)"
            return self.losses(features, proposals, image_sizes, targets)
        return self.detect(features, proposals, image_sizes)

    def detect(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections with their 28x28 masks (in the resized image's pixels)."""
        # 4. RoI Align: a 7x7 feature grid per proposal
        box_features = self.box_roi_pool(features, proposals, image_sizes)  # (sum K, C_fpn, 7, 7)
        # 5. Box & classifier head: class scores and class-specific deltas -> per-class NMS -> detections
        class_logits, box_regression = self.box_predictor(self.box_head(box_features))  # (sum K, C), (sum K, 4C)
        boxes, scores, labels = components.postprocess_detections(
            class_logits, box_regression, proposals, image_sizes,
            self.score_thresh, self.nms_thresh, self.detections_per_img, self.bbox_reg_weights,
        )  # fmt: skip
        # 4 again: a 14x14 grid per detection.  6. Mask head: 28x28 logits per detection and class
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_sizes)))
        masks = select_class_masks(mask_logits, labels)  # per image (T, 1, 28, 28): the detected class's mask
        return [{"boxes": b, "labels": l, "scores": s, "masks": m} for b, l, s, m in zip(boxes, labels, scores, masks)]

    def losses(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """The box head's and the mask head's losses on a sample of the proposals."""
        # label each proposal with its ground truth and sample the RoIs the heads learn from
        proposals, matched_idxs, labels, regression_targets = components.select_training_samples(
            proposals, targets, self.proposal_matcher, self.fg_bg_sampler, self.box_coder
        )
        # 4. RoI Align: a 7x7 feature grid per sampled RoI
        box_features = self.box_roi_pool(features, proposals, image_sizes)
        # 5. Box & classifier head: cross-entropy on the classes, smooth L1 on the true class's deltas
        class_logits, box_regression = self.box_predictor(self.box_head(box_features))
        loss_classifier, loss_box_reg = components.fastrcnn_loss(
            class_logits, box_regression, labels, regression_targets
        )
        # 4 again: a 14x14 grid per positive RoI.  6. Mask head: masks are learned on positive RoIs only
        positive = [torch.where(l > 0)[0] for l in labels]  # (P,) per image
        mask_rois = [p[i] for p, i in zip(proposals, positive)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_rois, image_sizes)))
        loss_mask = components.maskrcnn_loss(
            mask_logits, mask_rois, [t["masks"] for t in targets], [t["labels"] for t in targets],
            [m[i] for m, i in zip(matched_idxs, positive)],
        )  # fmt: skip
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}


class MaskRCNN(nn.Module):
    """Mask R-CNN (He et al. 2017) on a ResNet-FPN backbone.

    Keywords and defaults are torchvision's MaskRCNN's (the defaults are the R-50-FPN COCO recipe):
    image sizes, RPN and box-head thresholds and sample sizes. anchor_sizes, aspect_ratios,
    representation_size, mask_layers and mask_dim_reduced size the parts that torchvision takes as
    modules.
    """

    def __init__(
        self,
        backbone: BackboneWithFPN,
        num_classes: int,
        # stage 1: the image is scaled so its short side is min_size, long side at most max_size
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        image_mean: tuple[float, ...] = IMAGENET_MEAN,
        image_std: tuple[float, ...] = IMAGENET_STD,
        # stage 3: one anchor size per FPN level, P2..P6 (FPN paper, 4.1), three shapes each
        anchor_sizes: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        # stage 5
        representation_size: int = 1024,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] | None = None,
        # stage 6: four 3x3 convs of 256 (Mask R-CNN, Fig. 4)
        mask_layers: tuple[int, ...] = (256, 256, 256, 256),
        mask_dim_reduced: int = 256,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.transform = GeneralizedRCNNTransform(min_size, max_size, image_mean, image_std)
        self.backbone = backbone
        anchor_generator = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),) * len(anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchor_generator=anchor_generator,
            head=RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0]),
            fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            nms_thresh=rpn_nms_thresh,
            score_thresh=rpn_score_thresh,
        )
        self.roi_heads = RoIHeads(
            fpn_channels=backbone.out_channels,
            num_classes=num_classes,
            representation_size=representation_size,
            mask_layers=tuple(mask_layers),
            mask_dim_reduced=mask_dim_reduced,
            fg_iou_thresh=box_fg_iou_thresh,
            bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            bbox_reg_weights=bbox_reg_weights,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=box_detections_per_img,
        )

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """Eval: N dicts of boxes (T, 4), labels (T,), scores (T,), masks (T, 1, H, W) probabilities.
        Train: {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}."""
        dtype = next(self.parameters()).dtype  # the model runs in its weights' dtype: images are converted to it
        images, targets = check_images_and_targets(
            images, targets, self.training, self.num_classes, self.transform.max_size, dtype
        )
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        # 1. Input image: normalize, resize, pad into one batch (targets rescaled alike)
        batch, targets = self.transform(images, targets)
        # 2. Backbone CNN: ResNet + FPN -> P2..P6
        features = self.backbone(batch.tensors)
        # 3. Region Proposal Network: proposals per image (+ the RPN's two losses in training)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        # 4-6. RoI Align, box & classifier head, mask head (RoIHeads.detect; in training RoIHeads.losses)
        if self.training:
            return {**rpn_losses, **self.roi_heads(features, proposals, batch.image_sizes, targets)}
        detections = self.roi_heads(features, proposals, batch.image_sizes)
        # back to each image's own size: boxes rescaled (stage 1), then masks pasted at their boxes (stage 6)
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        for detection, size in zip(detections, original_sizes):
            detection["masks"] = paste_masks_within_memory(detection["masks"], detection["boxes"], size)
        return detections

    def extra_repr(self) -> str:
        """print(model) starts with the components that are not the package's own (see components.summary)."""
        swapped = [f"{name}={components.active(name)}" for name in components.NAMES if components.active(name) != "own"]
        return "components: " + (", ".join(swapped) if swapped else "all the package's own")

    @torch.no_grad()
    def trace(self, image: Tensor) -> PredictionTrace:
        """Run one image (Tensor[3, H, W]) in eval mode and record what each of the six stages took and gave."""
        return record_trace(self, image)


def maskrcnn_resnet50_fpn(num_classes: int = 91, **kwargs) -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn configuration (ResNet-50, FPN of 256 channels)."""
    return MaskRCNN(BackboneWithFPN(ResNetConfig(), fpn_channels=256), num_classes, **kwargs)


@dataclass
class SmallConfig:
    """The course's CPU configuration, sized for 128-px synthetic scenes (defaults say why)."""

    backbone: ResNetConfig = field(
        default_factory=lambda: ResNetConfig(
            block=BasicBlock, layers=(2, 2, 2, 2), widths=(32, 64, 128, 256), stem_channels=32
        )
    )
    fpn_channels: int = 64  # a quarter of R-50's 256: the mask head's cost grows with its square
    # The 128-px scenes are enlarged to 192 px inside the model (stage 1): small objects get more pixels on P2 and
    # in RoI Align, for a little more time a step, and fewer steps reach a higher mask mAP (benchmarks/TUNING.md,
    # run 20 against runs 14-18). Detections come back in the scene's own pixels.
    min_size: int = 192
    max_size: int = 192
    anchor_sizes: tuple = ((8,), (16,), (32,), (64,), (128,))  # R-50's sizes scaled by 128/512
    # training proposals: 300 per level before NMS, 150 after: as accurate as 600/300 on these scenes, and a
    # faster step while the RPN's NMS was a large part of the forward pass (benchmarks/TUNING.md, runs 4 and 6)
    rpn_pre_nms_top_n_train: int = 300
    rpn_post_nms_top_n_train: int = 150
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 100  # at most 4 objects per scene: 100 proposals are plenty
    rpn_batch_size_per_image: int = 128
    representation_size: int = 256
    box_batch_size_per_image: int = 64
    box_detections_per_img: int = 20
    mask_layers: tuple = (64, 64)  # two convs, not four: the mask head dominates CPU time
    mask_dim_reduced: int = 64

    def model_kwargs(self) -> dict:
        kwargs = dict(self.__dict__)
        kwargs.pop("backbone"), kwargs.pop("fpn_channels")
        return kwargs


def maskrcnn_small(num_classes: int = 6, **kwargs) -> MaskRCNN:
    """The small ResNet-FPN Mask R-CNN that the course trains on a laptop CPU (see SmallConfig)."""
    config = SmallConfig()
    return MaskRCNN(
        BackboneWithFPN(config.backbone, config.fpn_channels), num_classes, **{**config.model_kwargs(), **kwargs}
    )
