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

The names below are imported when first used, so `import mrcnn_course.quiz` (a quiz notebook) or
nbgrader's configuration does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "components": "mrcnn_course.components",
    "MaskRCNN": "mrcnn_course.model", "SmallConfig": "mrcnn_course.model",
    "maskrcnn_resnet50_fpn": "mrcnn_course.model", "maskrcnn_small": "mrcnn_course.model",
    "PredictionTrace": "mrcnn_course.trace", "StageRecord": "mrcnn_course.trace",
    "train": "mrcnn_course.training", "Recipe": "mrcnn_course.training",
    "TrainingTrace": "mrcnn_course.training_trace", "EpochRecord": "mrcnn_course.training_trace",
    "load_pretrained_small": "mrcnn_course.pretrained",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mrcnn_course' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return module if _EXPORTS[name] == f"mrcnn_course.{name}" else getattr(module, name)  # a module, or a name in it
