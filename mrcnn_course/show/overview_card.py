"""Lesson 0's data-flow card: the overview's round numbers beside the live shapes of the ResNet-50-FPN
and of the small model, in one table, with where the overview simplifies.

    display(Markdown(overview_card(model.trace(image))))

The overview follows one 800x800 image: 50x50x256 features, 1000 boxes, 14x14x256 regions, 28x28
masks. The ResNet-50-FPN column is computed, not typed: the model is built on the meta device (shapes
only, no weights, no arithmetic) and each stage's modules run on meta tensors of the sizes the stage
before gave. Stages whose output size depends on the values (the RPN's NMS, the detections) take
their count from the model's own settings (post_nms_top_n, detections_per_img): an upper bound.

Shapes:
    K proposals (RoIs);  D detections;  C classes;  F the FPN's channels
"""

import torch
from torch import Tensor

from mrcnn_course.model.maskrcnn import MaskRCNN, maskrcnn_resnet50_fpn
from mrcnn_course.model.prediction_trace import PredictionTrace, shape_of

OVERVIEW = {  # the overview's data flow for one 800x800 image, as the seed overview states it
    "image": "800x800",
    "features": "50x50x256",
    "boxes": "1000",
    "regions": "14x14x256",
    "masks": "28x28",
}
SIMPLIFIES = {  # where the overview's single-scale picture differs from the model
    "image": "the image is normalized, resized by the min/max-size rule and padded to a multiple of 32",
    "features": "one map stands for the FPN's five, P2 to P6; 50x50x256 is P4 (stride 16). Without an FPN, "
    "a single-scale Faster R-CNN reads C4: 50x50x1024",
    "boxes": "the RPN keeps at most this many, after NMS per level (in training, more)",
    "regions": "the box head reads 7x7 grids of every proposal; 14x14 grids are the mask head's, and only "
    "for the detections",
    "masks": "masks only for the detections: one 28x28 mask per class, the detected class's pasted into the image",
}


def resnet50_fpn_shapes(size: int = 800) -> dict[str, str]:
    """The ResNet-50-FPN's shapes for a size x size image, by the overview's rows, run on the meta device."""
    with torch.device("meta"):
        model = maskrcnn_resnet50_fpn().eval()
        images, _ = model.transform([torch.zeros(3, size, size)])
        maps = model.backbone(images.tensors)
        proposals = model.rpn.post_nms_top_n()  # NMS decides how many: this is the most it keeps
        return _stage_shapes(model, images.tensors, maps, proposals, model.roi_heads.detections_per_img)


def small_model_shapes(trace: PredictionTrace) -> dict[str, str]:
    """The same rows from a trace of the small model (model.trace(image)): what really flowed."""
    stage = {s.number: s for s in trace.stages}
    levels = ", ".join(f"{name} {shape}" for name, shape in stage[2].outputs.items())
    return {
        "image": f"image {stage[1].inputs['image']} -> batch {stage[1].outputs['batch']}",
        "features": levels,
        "boxes": f"proposals {stage[3].outputs['proposals']}",
        "regions": f"box head {stage[4].outputs['box features']}, mask head {stage[4].outputs['mask features']}",
        "masks": f"mask logits {stage[6].outputs['mask logits']}, pasted {stage[6].outputs['masks']}",
    }


def _stage_shapes(model: MaskRCNN, batch: Tensor, maps: dict[str, Tensor], proposals: int, detections: int) -> dict:
    heads = model.roi_heads
    channels = model.backbone.out_channels
    box_features = torch.zeros(proposals, channels, *heads.box_roi_pool.output_size)  # (K, F, 7, 7)
    mask_features = torch.zeros(detections, channels, *heads.mask_roi_pool.output_size)  # (D, F, 14, 14)
    class_logits, _ = heads.box_predictor(heads.box_head(box_features))  # (K, C)
    mask_logits = heads.mask_predictor(heads.mask_head(mask_features))  # (D, C, 28, 28)
    levels = ", ".join(f"P{level} {shape_of(m)}" for level, m in enumerate(maps.values(), start=2))
    return {
        "image": f"batch {shape_of(batch)}",
        "features": levels,
        "boxes": f"proposals up to {proposals}x4",
        "regions": f"box head {shape_of(box_features)}, mask head up to {shape_of(mask_features)}",
        "masks": f"mask logits up to {shape_of(mask_logits)} ({class_logits.shape[1]} classes)",
    }


def overview_card(trace: PredictionTrace, size: int = 800) -> str:
    """The card as a markdown table: the overview, the ResNet-50-FPN (size x size, meta device), the
    small model (trace), and where the overview simplifies."""
    r50, small = resnet50_fpn_shapes(size), small_model_shapes(trace)
    rows = [
        f"| | the overview | ResNet-50-FPN, {size}x{size} (live, meta device) | the small model, this scene (live) "
        "| where the overview simplifies |",
        "|---|---|---|---|---|",
    ]
    rows += [f"| {row} | {OVERVIEW[row]} | {r50[row]} | {small[row]} | {SIMPLIFIES[row]} |" for row in OVERVIEW]
    return "\n".join(rows)
