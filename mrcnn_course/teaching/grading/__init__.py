"""Grading that teaches: one checker per exercise, and the learner's components beyond a lesson.

An exercise is one component of mrcnn_course.model.components: the learner writes a function with the
component's signature, and check_<component>(fn) compares it with the package's own on named cases.

    from mrcnn_course.teaching import grading
    grading.check_nms(nms)               # the visible cases: prints "nms: 7 cases passed (compared exactly)"
    grading.check_nms(nms, extra=True)   # also the hidden cases (the autograder's hidden tests)

A failure raises an AssertionError that names the case, shows the inputs, expected against got
(shape, dtype, values: max error, first differing index) and a hint; an exception in the learner's
code is shown at the learner's own line. While a checker runs, the reference and torchvision's op are
switched off, and a time limit stops endless loops (guard.py says how and its limits).

The checkers, stage by stage (lesson):
    1 input image (01)   check_resize_boxes, check_resize, check_batch_images
    2 backbone (02)      check_bottleneck, check_fpn_top_down
    3 RPN (03)           check_cell_anchors, check_anchor_grid, check_encode_boxes, check_decode_boxes,
                         check_box_iou, check_nms, check_filter_proposals
    4 RoI Align (04)     check_interpolation_weights (a helper), check_roi_align, check_map_levels
    5 box head (05)      check_fastrcnn_loss, check_postprocess_detections
    6 mask head (06)     check_project_masks_on_boxes, check_maskrcnn_loss, check_paste_masks_in_image
    training (07)        check_train_step (not a component: the capstone's training step)

Stuck? hint("nms") prints an exercise's steps (hints.py); its docstring in the lesson states only the
contract, so that a learner can try it as a problem first.

Beyond the lesson: plug_into_model (same output with your functions?), save_component and
load_components (the capstone runs on the learner's saved components); see learner.py.

Adding a checker for a new exercise (solutions/README.md walks through a lesson):
    1. in checks_<stage>.py, a function returning the cases: [Case("a name a learner understands",
       args_in_the_component's_order), ..., Case(..., extra=True) for the hidden ones]; build inputs
       with torch's generator (run() seeds it), keep them small;
    2. an Exercise(component, cases, hint, mistakes=(Mistake(hint, wrong_answer_fn), ...), atol, rtol,
       torchvision_names=(dotted names of torchvision's versions to switch off,));
       a Mistake's function computes what that usual mistake gives, with the reference;
    3. def check_<component>(fn, extra=False): run(EXERCISE, fn, extra), exported below;
    4. tests/test_grading.py picks up every Exercise in EXERCISES: the reference passes, torchvision
       agrees on every case, and each Mistake's function is caught with its hint.
An exercise that is not a component (a helper such as interpolation_weights, the capstone's
train_step) names its reference (Exercise(..., reference=fn)) and, when the return value alone does
not tell, what a case compares (outcome=...: train_step's losses and the weights after its step); it
goes in HELPER_EXERCISES, and its module's own test file checks it (tests/test_grading_<stage>.py).
"""

from mrcnn_course.teaching.grading.checks_backbone import BOTTLENECK, FPN_TOP_DOWN, check_bottleneck, check_fpn_top_down
from mrcnn_course.teaching.grading.checks_box_head import (
    FASTRCNN_LOSS,
    POSTPROCESS_DETECTIONS,
    check_fastrcnn_loss,
    check_postprocess_detections,
)
from mrcnn_course.teaching.grading.checks_box_ops import (
    BOX_IOU,
    DECODE_BOXES,
    ENCODE_BOXES,
    NMS,
    check_box_iou,
    check_decode_boxes,
    check_encode_boxes,
    check_nms,
)
from mrcnn_course.teaching.grading.checks_input_image import (
    BATCH_IMAGES,
    RESIZE,
    RESIZE_BOXES,
    check_batch_images,
    check_resize,
    check_resize_boxes,
)
from mrcnn_course.teaching.grading.checks_mask_head import (
    MASKRCNN_LOSS,
    PASTE_MASKS_IN_IMAGE,
    PROJECT_MASKS_ON_BOXES,
    check_maskrcnn_loss,
    check_paste_masks_in_image,
    check_project_masks_on_boxes,
)
from mrcnn_course.teaching.grading.checks_roi_align import (
    INTERPOLATION_WEIGHTS,
    MAP_LEVELS,
    ROI_ALIGN,
    check_interpolation_weights,
    check_map_levels,
    check_roi_align,
)
from mrcnn_course.teaching.grading.checks_rpn import (
    ANCHOR_GRID,
    CELL_ANCHORS,
    FILTER_PROPOSALS,
    check_anchor_grid,
    check_cell_anchors,
    check_filter_proposals,
)
from mrcnn_course.teaching.grading.checks_training import TRAIN_STEP, check_train_step
from mrcnn_course.teaching.grading.core import Case, Exercise, Mistake, passed, run
from mrcnn_course.teaching.grading.guard import ReferenceSwitchedOff, TimeLimitExceeded
from mrcnn_course.teaching.grading.hints import hint
from mrcnn_course.teaching.grading.learner import course_home, load_components, plug_into_model, save_component
from mrcnn_course.teaching.notebook_errors import install

install()  # in a notebook: a check cell run before the cells it needs says which to run (notebook_errors.py)

# Every exercise, by component name, in the order of the lessons.
EXERCISES: dict[str, Exercise] = {
    e.component: e
    for e in (
        RESIZE_BOXES,
        RESIZE,
        BATCH_IMAGES,
        BOTTLENECK,
        FPN_TOP_DOWN,
        CELL_ANCHORS,
        ANCHOR_GRID,
        ENCODE_BOXES,
        DECODE_BOXES,
        BOX_IOU,
        NMS,
        FILTER_PROPOSALS,
        ROI_ALIGN,
        MAP_LEVELS,
        FASTRCNN_LOSS,
        POSTPROCESS_DETECTIONS,
        PROJECT_MASKS_ON_BOXES,
        MASKRCNN_LOSS,
        PASTE_MASKS_IN_IMAGE,
    )
}
# Exercises that are not components (a helper the learner writes first, the capstone's training step):
# each names its own reference (Exercise.reference).
HELPER_EXERCISES: dict[str, Exercise] = {e.component: e for e in (INTERPOLATION_WEIGHTS, TRAIN_STEP)}

__all__ = [
    "check_resize_boxes",
    "check_resize",
    "check_batch_images",
    "check_bottleneck",
    "check_fpn_top_down",
    "check_cell_anchors",
    "check_anchor_grid",
    "check_encode_boxes",
    "check_decode_boxes",
    "check_box_iou",
    "check_nms",
    "check_filter_proposals",
    "check_interpolation_weights",
    "check_roi_align",
    "check_map_levels",
    "check_fastrcnn_loss",
    "check_postprocess_detections",
    "check_project_masks_on_boxes",
    "check_maskrcnn_loss",
    "check_paste_masks_in_image",
    "check_train_step",
    "hint",
    "plug_into_model",
    "save_component",
    "load_components",
    "course_home",
    "passed",
    "run",
    "Case",
    "Exercise",
    "Mistake",
    "EXERCISES",
    "HELPER_EXERCISES",
    "ReferenceSwitchedOff",
    "TimeLimitExceeded",
]
