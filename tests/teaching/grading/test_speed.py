"""Speed cases (grading/speed.py): a correct but slow function fails its check with the reasons; a fast one passes.

No test here asserts a time: a slow function burns 50x the package's CPU time, so the verdict is certain."""

import json
import time
from pathlib import Path

import pytest
import torch

from mrcnn_course.model import components
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading import speed


def lesson_function(lesson: str, cell_id: str):
    notebooks = sorted((Path(__file__).parents[3] / "solutions" / lesson).glob("*.ipynb"))  # one or several
    cells = [c for path in notebooks for c in json.loads(path.read_text())["cells"]]
    namespace = {"torch": torch, "components": components}
    exec("".join(next(c for c in cells if c.get("id") == cell_id)["source"]), namespace)
    return namespace[cell_id.replace("-", "_")]


def burn(seconds: float) -> None:
    """Spend CPU time of this thread (the speed cases measure CPU time, so a sleep would not count)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_step_inputs_are_a_real_training_step():
    inputs = speed.step_inputs()
    assert inputs["nms"].calls_per_step == 8  # one call per image of the recipe's batch of 8
    boxes, scores, threshold = inputs["nms"].args
    assert len(boxes) > 500 and threshold == 0.7  # an image's proposals before the RPN's NMS
    assert "bottleneck" not in inputs  # the capstone's ResNet has basic blocks: no speed case for it


def test_the_lessons_matrix_nms_passes_with_its_speed():
    nms = lesson_function("03_rpn", "nms")
    grading.check_nms(nms)
    assert grading.passed("nms") is nms


def test_a_correct_but_slow_nms_fails_and_says_why(capsys):
    fast_nms = lesson_function("03_rpn", "nms")
    package_seconds = speed.measure(fast_nms, fast_nms, speed.step_inputs()["nms"].args, speed_off).package

    def nms(boxes, scores, iou_threshold):
        if len(boxes) > 100:  # only on the speed case's inputs: the cases are small
            burn(50 * package_seconds)
        return fast_nms(boxes, scores, iou_threshold)

    with pytest.raises(AssertionError) as failure:
        grading.check_nms(nms)
    message = str(failure.value)
    assert all(len(line) <= 90 for line in message.splitlines())  # nbgrader validate shows them whole
    flat = " ".join(message.split())  # the message's words, its line breaks aside
    assert flat.startswith("check_nms: speed case failed: your nms is")
    assert "slower than the package's (the limit is 3x)" in flat
    assert "times per training step" in flat and "more minutes" in flat
    assert "To make it fast:" in flat and "overlaps[keep]" in flat
    assert grading.passed("nms") is None  # not saved for the capstone


def speed_off():
    from contextlib import nullcontext

    return nullcontext()
