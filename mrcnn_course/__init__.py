"""Mask R-CNN, stage by stage: a complete Mask R-CNN in plain PyTorch, one module per stage.

    1 input_image.py   normalize, resize, batch with padding, map outputs back
    2 backbone.py      ResNet + Feature Pyramid Network
    3 rpn.py           anchors, RPN head, proposals, RPN losses
    4 roi_align.py     RoI Align and the multi-scale pooler (FPN level per box)
    5 box_head.py      box head, predictor, Fast R-CNN loss, detection post-processing
    6 mask_head.py     mask head, predictor, mask targets, mask loss, pasting masks
      model.py         the six stages assembled: MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_small
      components.py    which implementation of each stage's core functions is active
      box_ops.py, matching.py, trace.py: shared pieces
      data.py, evaluation.py   synthetic scenes and COCO folders; mAP with pycocotools
      training.py      train(): the recipe, the loop, a TrainingTrace per run (training_trace.py),
                       checkpoints (checkpoints.py), torchrun (distributed.py); pretrained.py the shipped model
"""

# components first: the stage modules call through it, and it imports them.
from mrcnn_course import components
from mrcnn_course.model import MaskRCNN, SmallConfig, maskrcnn_resnet50_fpn, maskrcnn_small
from mrcnn_course.pretrained import load_pretrained_small
from mrcnn_course.trace import PredictionTrace, StageRecord
from mrcnn_course.training import Recipe, train
from mrcnn_course.training_trace import EpochRecord, TrainingTrace

__all__ = ["components", "MaskRCNN", "SmallConfig", "maskrcnn_resnet50_fpn", "maskrcnn_small",
           "PredictionTrace", "StageRecord", "train", "Recipe", "TrainingTrace", "EpochRecord",
           "load_pretrained_small"]
