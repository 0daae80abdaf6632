"""mrcnn_course.teaching.grading.core: what a check says when the learner's function fails (the case, inputs,
expected, got and the first difference; shape and dtype; a stub, a wrong signature, the reference itself, a
missing return, an input changed in place), that it leaves the learner's random generator alone, and that it
never blames correct code for an earlier helper's mistake: when the learner's function calls another
exercise of theirs by name (lesson 04's roi_align calls interpolation_weights), the helper is checked first,
and one that fails its check is replaced by the package's for that check, which says so. In a real kernel
(slow), a failure shows the learner's cell and the message once, never the grader's frames or paths."""

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from conftest import words
from nbgrader.preprocessors import Execute

from mrcnn_course.model import box_ops, components
from mrcnn_course.teaching import grading

LESSON = Path(__file__).resolve().parents[3] / "solutions" / "04_roi_align" / "04_roi_align.ipynb"


def notebook(**replace: str) -> dict:
    """Lesson 04's solutions of interpolation_weights and roi_align, run as in a notebook (one namespace);
    `replace` edits a line of the source (old -> new) to play a learner's mistake."""
    cells = {c["id"]: "".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"]}
    namespace = {"torch": torch, "F": F, "components": components, "__name__": "__main__"}
    for cell in ("interpolation-weights", "roi-align"):
        source = cells[cell]
        for old, new in replace.items():
            source = source.replace(old, new)
        exec(compile(source, f"<cell {cell}>", "exec"), namespace)
    return namespace


NO_ZERO_OUTSIDE = {"    weights = weights * ~outside[..., None]\n": ""}  # a usual wrong interpolation_weights


def test_right_roi_align_with_a_wrong_helper_passes_with_the_packages_helper_and_says_so(capsys):
    learner = notebook(**NO_ZERO_OUTSIDE)
    helper = learner["interpolation_weights"]
    with pytest.raises(AssertionError):
        grading.check_interpolation_weights(helper)
    capsys.readouterr()
    grading.check_roi_align(learner["roi_align"], extra=True)
    out = " ".join(capsys.readouterr().out.split())
    assert "roi_align: " in out and "cases passed" in out
    assert "your interpolation_weights was replaced by the package's for this check" in out
    assert "case 'coordinates outside [-1, length]: no weight at all'" in out
    assert grading.passed("roi_align") is None  # not plugged in or saved with a helper that is wrong
    assert learner["interpolation_weights"] is helper  # given back afterwards
    assert all(len(line) <= grading.core.MESSAGE_WIDTH for line in capsys.readouterr().out.splitlines())


def test_wrong_roi_align_with_a_wrong_helper_is_blamed_for_its_own_mistake_only():
    learner = notebook(**NO_ZERO_OUTSIDE, **{"roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)": "pass"})
    with pytest.raises(AssertionError) as failure:
        grading.check_roi_align(learner["roi_align"])
    message = " ".join(str(failure.value).split())
    assert "with aligned=False a box is at least one cell wide and high" in message
    assert "your interpolation_weights was replaced by the package's for this check" in message


def test_with_a_right_helper_nothing_is_replaced(capsys):
    learner = notebook()
    grading.check_roi_align(learner["roi_align"])
    assert "replaced" not in capsys.readouterr().out
    assert grading.passed("roi_align") is learner["roi_align"]


def test_a_failure_names_the_case_and_shows_inputs_expected_got_and_the_first_difference():
    def decode_boxes(deltas, boxes, weights, clip):  # forgets the clamp
        wx, wy, ww, wh = weights
        widths, heights = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
        cx, cy = boxes[:, 0:1] + widths / 2, boxes[:, 1:2] + heights / 2
        x, y = deltas[:, 0::4] / wx * widths + cx, deltas[:, 1::4] / wy * heights + cy
        w, h = torch.exp(deltas[:, 2::4] / ww) * widths, torch.exp(deltas[:, 3::4] / wh) * heights
        return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=2)

    with pytest.raises(AssertionError) as failure:
        grading.check_decode_boxes(decode_boxes)
    message = str(failure.value)
    assert words(message).startswith("check_decode_boxes: case 'huge dw and dh: clamp before exp' failed.")
    assert grading.core.failed_case(message) == ("decode_boxes", "huge dw and dh: clamp before exp")
    assert all(len(line) <= grading.core.MESSAGE_WIDTH for line in message.split("  inputs:")[0].splitlines())
    assert "deltas = Tensor[1, 4] float32 [[0, 0, 10, 8]]" in message
    assert "expected: Tensor[1, 1, 4] float32" in message and "got:      Tensor[1, 1, 4] float32" in message
    assert "the values differ: max abs error" in message and "first difference at index (0, 0, 0)" in message
    assert "hint: your answer is what this mistake gives: dw and dh were not clamped" in words(message)


def test_shape_and_dtype_differences_are_named():
    with pytest.raises(AssertionError, match=r"the dtype differs: expected torch.int64, got torch.float32"):
        grading.check_nms(lambda boxes, scores, iou_threshold: box_ops.remove_small_boxes(boxes, 0).float())
    with pytest.raises(AssertionError, match=r"the shape differs: expected \(2, 1, 4\), got \(2, 4\)"):
        grading.check_decode_boxes(lambda deltas, boxes, weights, clip: boxes.clone())


def test_not_implemented_stays_not_implemented_with_a_friendly_message():
    def nms(boxes, scores, iou_threshold):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="nms is not written yet"):
        grading.check_nms(nms)
    assert grading.passed("nms") is None


def test_wrong_signature_not_a_function_and_the_reference_itself_are_refused():
    with pytest.raises(
        AssertionError,
        match=r"takes \(boxes, scores\),\s+but the model calls\s+nms\(boxes, scores,\s+iou_threshold\)",
    ):
        grading.check_nms(lambda boxes, scores: boxes)
    with pytest.raises(AssertionError, match="needs your function, got Tensor"):
        grading.check_nms(torch.zeros(3))
    with pytest.raises(AssertionError, match=r"checks YOUR function, but this is\s+mrcnn_course.model.box_ops.nms"):
        grading.check_nms(box_ops.nms)


def test_returning_none_and_changing_an_input_in_place_get_their_own_hints():
    with pytest.raises(AssertionError, match="did you forget the `return` statement"):
        grading.check_box_iou(lambda boxes1, boxes2: None)

    def resize_boxes(boxes, original_size, new_size):
        boxes *= torch.tensor([new_size[1] / original_size[1], new_size[0] / original_size[0]] * 2)
        return boxes

    with pytest.raises(AssertionError, match=r"changed its input boxes in place"):
        grading.check_resize_boxes(resize_boxes)


def test_the_checker_leaves_the_learners_random_generator_alone(as_learner):
    state = torch.get_rng_state()
    grading.check_residual_block(as_learner(components.COMPONENTS["residual_block"].own), extra=True)
    assert torch.equal(torch.get_rng_state(), state)


WRONG_VALUES = """def box_iou(boxes1, boxes2):
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = bottom_right - top_left  # the clamp at 0 forgotten
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter)"""
RAISES = "def box_iou(boxes1, boxes2):\n    widths = boxes1[:, 2] - boxes1[:, 0]\n    return widths[:, 7]"
STUB = "def box_iou(boxes1, boxes2):\n    raise NotImplementedError()"


@pytest.mark.slow
def test_in_a_kernel_a_failure_shows_the_learners_lines_and_the_message_once_never_the_grader(tmp_path):
    """A real kernel, as nbgrader runs a lesson: three failing checks (wrong values, an error in the
    learner's code, a stub); each cell has one error output, which shows the cell that called the check
    and the message once, and no frame or path of the grader's."""
    check = "from mrcnn_course.teaching import grading\ngrading.check_box_iou(box_iou)"
    sources = ["import torch", WRONG_VALUES, check, RAISES, check, STUB, check]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    # nbgrader's Execute, as validate and autograde run a notebook: it adds a second error output when the
    # error shown is named otherwise than the kernel's reply (the message twice)
    Execute(timeout=300, allow_errors=True).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    plain = lambda text: re.sub(r"\x1b\[[0-9;]*m", "", text)  # noqa: E731 (IPython colours its tracebacks)
    for index, ename, first_line in [
        (2, "CheckFailed", "check_box_iou: case 'disjoint boxes' failed."),
        (4, "CheckFailed", "check_box_iou: case 'identical boxes' failed: your box_iou"),
        (6, "NotWrittenYet", "box_iou is not written yet: replace `raise"),
    ]:
        [error] = [o for o in nb.cells[index].outputs if o.output_type == "error"]
        shown = plain("\n".join(error.traceback))
        assert error.ename == ename and error.evalue.startswith(first_line), error.evalue
        assert "----> 2 grading.check_box_iou(box_iou)" in shown  # the learner's cell and line
        assert shown.count(first_line) == 1, shown  # the message once
        assert "mrcnn_course/" not in shown and "core.py" not in shown and "File " not in shown, shown
        assert "skipping hidden" not in shown
    raised = plain("\n".join(next(o for o in nb.cells[4].outputs if o.output_type == "error").traceback))
    assert "Cell In[4], line 3, in box_iou\n        return widths[:, 7]" in raised  # where their code failed


def test_a_module_class_whose_forward_calls_super_or_its_own_methods_is_told_what_runs():
    from mrcnn_course.model import box_head

    class CallsSuper(box_head.TwoMLPHead):
        def forward(self, x):
            return super().forward(x)

    class OwnMethod(box_head.TwoMLPHead):
        def flat(self, x):
            return x.flatten(start_dim=1)

        def forward(self, x):
            return torch.relu(self.fc7(torch.relu(self.fc6(self.flat(x)))))

    with pytest.raises(AssertionError) as calls_super:
        grading.check_two_mlp_head(CallsSuper)
    assert "your forward calls super(), but it runs on the model's own head" in words(str(calls_super.value))
    with pytest.raises(AssertionError) as own_method:
        grading.check_two_mlp_head(OwnMethod)
    assert "your forward uses flat of your class" in words(str(own_method.value))
