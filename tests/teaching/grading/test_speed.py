"""Speed cases (grading/speed.py): a correct but slow function fails its check with the reasons; a fast one passes;
a component written twice (nms, nms_fast) is timed in its fast version only.

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
    assert inputs["residual_block"].calls_per_step == 8  # the capstone's ResNet: 8 basic blocks, one batch


def test_the_lessons_greedy_nms_is_checked_for_correctness_only_and_its_nms_fast_for_speed(capsys):
    nms, nms_fast = lesson_function("03_rpn", "nms"), lesson_function("03_rpn", "nms-fast")
    grading.check_nms(nms)
    assert grading.passed("nms") is nms and "speed" not in capsys.readouterr().out
    grading.check_nms_fast(nms_fast)
    assert grading.passed("nms_fast") is nms_fast
    assert "the package's on a training step's inputs (limit 3x)" in capsys.readouterr().out


def test_a_correct_but_slow_nms_fast_fails_and_says_why_with_its_own_first_hint():
    fast_nms = lesson_function("03_rpn", "nms-fast")
    step_boxes = speed.step_inputs()["nms"].args[0]
    package_seconds = speed.measure(fast_nms, fast_nms, speed.step_inputs()["nms"].args, speed_off).package

    def nms_fast(boxes, scores, iou_threshold):
        if boxes.shape == step_boxes.shape:  # only on the speed case's inputs: no case has as many boxes
            burn(50 * package_seconds)
        return fast_nms(boxes, scores, iou_threshold)

    grading.check_nms(nms_fast)  # the first version has no speed case: correct is enough
    assert grading.passed("nms") is nms_fast
    with pytest.raises(AssertionError) as failure:
        grading.check_nms_fast(nms_fast)
    message = str(failure.value)
    assert all(len(line) <= 90 for line in message.splitlines())  # nbgrader validate shows them whole
    flat = " ".join(message.split())  # the message's words, its line breaks aside
    assert flat.startswith("check_nms_fast: speed case failed: your nms_fast is")
    assert "slower than the package's (the limit is 3x)" in flat
    assert "times per training step" in flat and "more minutes" in flat
    first_step = " ".join(grading.EXERCISES["nms_fast"].steps[0].rstrip(".").split())
    assert f"To make it fast: {first_step} (grading.hint('nms_fast') gives the next ideas" in flat
    assert grading.passed("nms_fast") is None  # not saved for the capstone


def speed_off():
    from contextlib import nullcontext

    return nullcontext()
