"""mrcnn_course.teaching.grading.guard: during a check the reference is out of reach (by every name) and back
afterwards, other components run the package's own, an endless loop is stopped at the learner's line, and an
error points at the learner's line (in a notebook: the cell), not torch's."""

import signal
import time

import nbformat
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import words
from nbclient import NotebookClient

from mrcnn_course.model import box_ops, components
from mrcnn_course.teaching import grading


def test_an_error_in_the_learners_code_shows_their_line_not_torchs():
    def resize(image, min_size, max_size, target=None):
        scale = min_size / min(image.shape[-2:])
        return F.interpolate(image, scale_factor=scale, mode="bilinear"), target  # image[None] forgotten

    with pytest.raises(AssertionError) as failure:
        grading.check_resize(resize)
    message = str(failure.value)
    assert "case 'square image that needs no resizing' failed" in words(message)
    assert "your resize raised" in message
    assert "your resize raised NotImplementedError" in message  # torch's, not a stub's
    assert 'in resize\n        return F.interpolate(image, scale_factor=scale, mode="bilinear"), target' in message
    assert "torch/nn/functional.py" not in message and "mrcnn_course" not in message.split("your code")[1]


@pytest.mark.slow
def test_in_a_notebook_the_message_points_at_the_cell_and_line_and_hides_the_checker(tmp_path):
    cells = [
        "from mrcnn_course.teaching import grading",
        "def box_iou(boxes1, boxes2):\n    widths = boxes1[:, 2] - boxes1[:, 0]\n    return widths[:, 7]",
        "grading.check_box_iou(box_iou)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        nb, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    error = next(o for o in nb.cells[2].outputs if o.output_type == "error")
    assert error.ename == "CheckFailed"  # an AssertionError
    assert "Cell In[2], line 3, in box_iou\n        return widths[:, 7]" in error.evalue
    assert "grading/core.py" not in "\n".join(error.traceback)  # the checker's frames are not shown


def _calls_torchvision(boxes, scores, iou_threshold):
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def _calls_the_component(boxes, scores, iou_threshold):
    return components.nms(boxes, scores, iou_threshold)


def _calls_the_package(boxes, scores, iou_threshold):
    return box_ops.nms(boxes, scores, iou_threshold)


def _calls_the_torch_op(boxes, scores, iou_threshold):
    return torch.ops.torchvision.nms(boxes, scores, iou_threshold)


def _calls_an_imported_name(boxes, scores, iou_threshold):
    return imported_nms(boxes, scores, iou_threshold)  # noqa: F821 (set by the test below)


@pytest.mark.parametrize(
    "learner, named",
    [
        (_calls_torchvision, "torchvision.ops.nms"),
        (_calls_the_component, "mrcnn_course.model.components.nms"),
        (_calls_the_package, "mrcnn_course.model.box_ops.nms"),
        (_calls_the_torch_op, "torch.ops.torchvision.nms"),
        (_calls_an_imported_name, "imported_nms (imported into your notebook)"),
    ],
)
def test_the_reference_is_out_of_reach_during_the_check_and_back_afterwards(learner, named):
    globals()["imported_nms"] = torchvision.ops.nms
    originals = (torchvision.ops.nms, box_ops.nms, torch.ops.torchvision.nms, components.nms)
    with pytest.raises(AssertionError) as failure:
        grading.check_nms(learner)
    assert f"{named} is switched off while check_nms runs" in str(failure.value)
    assert (torchvision.ops.nms, box_ops.nms, torch.ops.torchvision.nms, components.nms) == originals
    assert globals()["imported_nms"] is torchvision.ops.nms
    assert components.COMPONENTS["nms"].own is originals[1] and components.active("nms") == "own"
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    assert components.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_other_components_stay_usable_and_run_the_reference_during_a_check(as_learner):
    components.use("batched_nms", lambda boxes, scores, idxs, iou_threshold: 1 / 0)  # a broken one of the learner's

    def filter_proposals(*args):  # the learner's code may call other components
        return rpn_reference(*args)

    rpn_reference = as_learner(components.COMPONENTS["filter_proposals"].own)
    grading.check_filter_proposals(filter_proposals)
    assert components.active("batched_nms") != "own"  # restored to the learner's choice


def test_an_endless_loop_is_stopped_at_the_learners_line_and_an_outer_alarm_survives(monkeypatch):
    monkeypatch.setattr(grading.EXERCISES["nms"], "time_limit", 0.5)
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *args: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, 60)

    def nms(boxes, scores, iou_threshold):
        while True:
            pass

    try:
        start = time.monotonic()
        with pytest.raises(AssertionError) as failure:
            grading.check_nms(nms)
        assert time.monotonic() - start < 5
        assert "your nms was stopped" in str(failure.value) and "after 0.5 s" in str(failure.value)
        assert ", in nms\n" in str(failure.value)  # the learner's line where the loop was stopped
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 50 < left <= 60 and not fired  # the outer alarm is pending again, with its time left
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
