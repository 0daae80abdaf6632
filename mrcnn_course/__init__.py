"""Mask R-CNN, stage by stage: a complete Mask R-CNN in plain PyTorch, and the course built around it.

The folders are the architecture; dependencies run one way, downwards in this list:

    teaching/   grading (one checker per exercise), quizzes, nbgrader's steps, release/autograde/grades
    show/       pictures and widgets: detections, the stage-by-stage trace, explorers, the training viewer
    training/   synthetic scenes and COCO folders, the training loop and recipe, the training trace,
                checkpoints, torchrun, evaluation (pycocotools), the shipped trained model
    model/      the working Mask R-CNN: one module per stage (input_image, backbone, rpn, roi_align,
                box_head, mask_head), box_ops and matching, the assembly (maskrcnn), the components
                registry, torchvision's versions of the components, the prediction trace

Each subpackage's docstring maps its modules. The short names below are what lessons import
(`from mrcnn_course import components, data, grading, viz`); each is loaded when first used, so a quiz
notebook (`from mrcnn_course import quiz`) or nbgrader's configuration does not pay for importing torch.
"""

import importlib
from typing import Any

# short name -> the module it is, or (module, attribute) for a class or function
_MODULES = {
    # model: the six stages, their shared pieces, the registry, the prediction trace
    "model": "mrcnn_course.model",
    "input_image": "mrcnn_course.model.input_image",
    "backbone": "mrcnn_course.model.backbone",
    "rpn": "mrcnn_course.model.rpn",
    "roi_align": "mrcnn_course.model.roi_align",
    "box_head": "mrcnn_course.model.box_head",
    "mask_head": "mrcnn_course.model.mask_head",
    "box_ops": "mrcnn_course.model.box_ops",
    "matching": "mrcnn_course.model.matching",
    "maskrcnn": "mrcnn_course.model.maskrcnn",
    "components": "mrcnn_course.model.components",
    "torchvision_ops": "mrcnn_course.model.torchvision_ops",
    "prediction_trace": "mrcnn_course.model.prediction_trace",
    # training and data
    "training": "mrcnn_course.training",
    "scenes": "mrcnn_course.training.scenes",
    "data": "mrcnn_course.training.data",
    "evaluation": "mrcnn_course.training.evaluation",
    "training_trace": "mrcnn_course.training.training_trace",
    "checkpoints": "mrcnn_course.training.checkpoints",
    "pretrained": "mrcnn_course.training.pretrained",
    # pictures and widgets
    "show": "mrcnn_course.show",
    "viz": "mrcnn_course.show.viz",
    "stage_viz": "mrcnn_course.show.stage_viz",
    "explorers": "mrcnn_course.show.explorers",
    "widgets": "mrcnn_course.show.widgets",
    "roi_geometry": "mrcnn_course.show.roi_geometry",
    # teaching
    "teaching": "mrcnn_course.teaching",
    "grading": "mrcnn_course.teaching.grading",
    "quiz": "mrcnn_course.teaching.quiz",
    "nbgrader_steps": "mrcnn_course.teaching.nbgrader_steps",
}
_NAMES = {
    "MaskRCNN": "mrcnn_course.model.maskrcnn",
    "SmallConfig": "mrcnn_course.model.maskrcnn",
    "maskrcnn_resnet50_fpn": "mrcnn_course.model.maskrcnn",
    "maskrcnn_small": "mrcnn_course.model.maskrcnn",
    "PredictionTrace": "mrcnn_course.model.prediction_trace",
    "StageRecord": "mrcnn_course.model.prediction_trace",
    "train": "mrcnn_course.training.loop",
    "Recipe": "mrcnn_course.training.loop",
    "TrainingTrace": "mrcnn_course.training.training_trace",
    "EpochRecord": "mrcnn_course.training.training_trace",
    "load_pretrained_small": "mrcnn_course.training.pretrained",
}
__all__ = [*_MODULES, *_NAMES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'mrcnn_course' has no attribute {name!r}; its short names are: {', '.join(__all__)}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
