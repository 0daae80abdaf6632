"""Grading that teaches: one check per exercise, and the learner's components beyond a lesson.

An exercise is one component of mrcnn_course.model.components: the learner writes a function with the
component's signature, and check_<component>(fn) compares it with the package's own on named cases.

    from mrcnn_course.teaching import grading
    grading.check_nms(nms)               # the visible cases: prints "nms: 7 cases passed (compared exactly)"
    grading.check_nms(nms, extra=True)   # also the hidden cases (the autograder's hidden tests)

A failure raises an AssertionError that names the case, shows the inputs, expected against got
(shape, dtype, values: max error, first differing index) and a hint; an exception in the learner's
code is shown at the learner's own line. While a checker runs, the reference and torchvision's op are
switched off, and a time limit stops endless loops (guard.py says how and its limits).

The checks, stage by stage (lesson), each declared in exercises_<stage>.py:
    1 input image (01)   check_resize_boxes, check_resize, check_batch_images
    2 backbone (02)      check_residual_block, check_fpn_top_down
    3 RPN (03a)          check_cell_anchors, check_anchor_grid (exercises_rpn.py), check_encode_boxes,
                         check_decode_boxes, check_box_iou, check_nms, check_nms_fast (exercises_box_ops.py)
          (03b)          check_rpn_head, check_filter_proposals, check_rpn_loss (exercises_rpn.py),
                         check_match_boxes, check_sample_balanced (exercises_matching.py)
    4 RoI Align (04)     check_interpolation_weights (a helper), check_roi_align, check_roi_align_fast,
                         check_map_levels
    5 box head (05)      check_two_mlp_head, check_fastrcnn_predictor, check_select_training_samples,
                         check_fastrcnn_loss, check_postprocess_detections
    6 mask head (06)     check_maskrcnn_heads, check_maskrcnn_predictor (module exercises: the class or the
                         function), check_project_masks_on_boxes, check_maskrcnn_loss, check_paste_masks_in_image
    training (07)        check_average_precision (a helper: COCO's AP, 07a), check_train_step (not a component:
                         the capstone's training step, 07b)

Stuck? hint("nms") prints an exercise's steps; its docstring in the lesson states only the contract, so
that a learner can try it as a problem first.

Beyond the lesson: plug_into_model (same output with your functions?), save_component and
load_components (the capstone runs on the learner's saved components); see learner.py.

How it is built:
    exercise.py          Case, Mistake, Exercise, and the registry (EXERCISES, HELPER_EXERCISES)
    exercises_<stage>.py each exercise declared once: @exercise(cases=..., hint=..., steps=..., mistakes=...,
                         fast=..., ...) on its def check_<name>(<name>, extra=False) (README: "Writing an exercise")
    judge.py             expected outputs, running a case under the guard (an Outcome), comparing (a Difference)
    core.py              the check in the learner's kernel: run(), its messages, the `exercise` decorator
    sealed.py            the re-check at autograding, outside the learner's kernel, by the same judge
    warm_runner.py       the process that runs a learner's code for it: a warm server, a fresh fork per notebook
    guard.py             the reference out of reach, the time limit, the learner's own line
    speed.py             the speed case; hints.py: hint(); learner.py: the learner's components beyond a lesson
tests/teaching/grading/test_exercise.py picks up every exercise in EXERCISES: the reference passes, torchvision
agrees on every case, and each Mistake is caught with its hint; tests/teaching/grading/test_judge.py runs each
through both drivers.
"""

# isort: off
# The stages in lesson order: importing one declares its exercises, in this order, in the registry.
from mrcnn_course.teaching.grading import exercises_input_image
from mrcnn_course.teaching.grading import exercises_backbone
from mrcnn_course.teaching.grading import exercises_rpn
from mrcnn_course.teaching.grading import exercises_box_ops
from mrcnn_course.teaching.grading import exercises_matching
from mrcnn_course.teaching.grading import exercises_roi_align
from mrcnn_course.teaching.grading import exercises_box_head
from mrcnn_course.teaching.grading import exercises_mask_head
from mrcnn_course.teaching.grading import exercises_training

# isort: on
from mrcnn_course.teaching.grading.core import passed, run
from mrcnn_course.teaching.grading.exercise import EXERCISES, HELPER_EXERCISES, Case, Exercise, Mistake
from mrcnn_course.teaching.grading.exercises_backbone import *  # noqa: F403 (check_residual_block, ...: see __all__)
from mrcnn_course.teaching.grading.exercises_box_head import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_box_ops import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_input_image import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_mask_head import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_matching import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_roi_align import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_rpn import *  # noqa: F403
from mrcnn_course.teaching.grading.exercises_training import *  # noqa: F403
from mrcnn_course.teaching.grading.guard import ReferenceSwitchedOff, TimeLimitExceeded
from mrcnn_course.teaching.grading.hints import hint
from mrcnn_course.teaching.grading.learner import course_home, load_components, plug_into_model, save_component
from mrcnn_course.teaching.notebook_errors import install

install()  # in a notebook: a check cell run before the cells it needs says which to run (notebook_errors.py)

__all__ = [
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
# every stage's check_<name> functions
__all__ += exercises_input_image.__all__
__all__ += exercises_backbone.__all__
__all__ += exercises_rpn.__all__
__all__ += exercises_box_ops.__all__
__all__ += exercises_matching.__all__
__all__ += exercises_roi_align.__all__
__all__ += exercises_box_head.__all__
__all__ += exercises_mask_head.__all__
__all__ += exercises_training.__all__
