"""Mask R-CNN, stage by stage: a complete Mask R-CNN in plain PyTorch, and the course built around it.

The folders are the architecture; dependencies run one way, downwards in this list:

    teaching/   grading (one checker per exercise), quizzes, nbgrader's steps, release/autograde/grades
    show/       pictures and widgets: detections, the stage-by-stage trace, explorers, the training viewer
    training/   synthetic scenes and COCO folders, the training loop and recipe, the training trace,
                checkpoints, torchrun, evaluation (pycocotools), the shipped trained model
    model/      the working Mask R-CNN: one module per stage (input_image, backbone, rpn, roi_align,
                box_head, mask_head), box_ops and matching, the assembly (maskrcnn), the components
                registry, torchvision's versions of the components, the prediction trace

Each subpackage's docstring maps its modules. Every module and name has one address, its own, which
editors and Shift-Tab follow: `from mrcnn_course.model.maskrcnn import maskrcnn_small`,
`from mrcnn_course.training import data`, `from mrcnn_course.teaching import grading`. Importing the package
or a subpackage loads nothing else, so a quiz notebook (`from mrcnn_course.teaching import quiz`) and
nbgrader's configuration do not pay for importing torch.
"""
