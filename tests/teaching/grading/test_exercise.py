"""mrcnn_course.teaching.grading: the checkers (right answers pass, usual mistakes get their hint, torchvision
agrees with every expected answer), the guard (reference out of reach, time limit, the learner's own
line), and the learner's components (save, load, plug into the model)."""

import copy
import inspect
import signal
import time

import nbformat
import pytest
import torch
import torch.nn.functional as F
import torchvision
from nbclient import NotebookClient

from mrcnn_course.model import box_ops, components, torchvision_ops
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading import exercise
from mrcnn_course.teaching.grading.judge import build_cases, difference

EXERCISES = list(grading.EXERCISES.values())
IDS = [e.component for e in EXERCISES]


def words(text: str) -> str:
    """The text with every run of spaces and line breaks as one space: a message's lines are wrapped."""
    return " ".join(text.split())


def answering(answers):
    """A learner's function that gives these answers, one per call, whatever the arguments."""
    answers = iter(answers)

    def learner(*args):
        return next(answers)

    return learner


def hidden_and_visible(exercise):
    return [c for c in build_cases(exercise, extra=True) if c.extra], build_cases(exercise)


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_the_reference_passes_every_case_and_says_what_it_compared(exercise, capsys, as_learner):
    fn = as_learner(components.COMPONENTS[exercise.component].own)
    grading.run(exercise, fn, extra=True)
    hidden, visible = hidden_and_visible(exercise)
    assert hidden and len(visible) >= 3, "every exercise needs visible and hidden cases"
    printed = capsys.readouterr().out
    assert f"{exercise.component}: {len(visible) + len(hidden)} cases passed, {len(hidden)} of them hidden" in printed
    assert grading.passed(exercise.component) is fn


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_torchvision_agrees_with_every_expected_answer(exercise):
    """The second opinion: the expected answers are right, not just the package's."""
    own = components.COMPONENTS[exercise.component].own
    theirs = getattr(torchvision_ops, exercise.component)
    for case in build_cases(exercise, extra=True):
        expected = own(*copy.deepcopy(case.args))
        with components.using(**{n: "torchvision" for n in components.NAMES}):
            got = theirs(*copy.deepcopy(case.args))
        got = tuple(got) if isinstance(expected, tuple) else got
        compare = case.compare or (lambda e, g, c: difference(e, g, exercise.atol, exercise.rtol))
        assert compare(expected, got, case) is None, f"case {case.name!r}: {compare(expected, got, case)}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_each_usual_mistake_is_caught_with_its_hint(exercise):
    cases = build_cases(exercise, extra=True)
    own = components.COMPONENTS[exercise.component].own
    rights = [own(*copy.deepcopy(case.args)) for case in cases]
    for mistake in exercise.mistakes:
        answers, differs = [], False
        for case, right in zip(cases, rights):
            try:
                wrong = mistake.answer(*copy.deepcopy(case.args))
            except Exception:  # the mistake does not apply here: answer right
                wrong = right
            differs = differs or difference(right, wrong, exercise.atol, exercise.rtol) is not None
            answers.append(wrong)
        assert differs, f"no case shows the mistake {mistake.hint!r}"
        with pytest.raises(AssertionError) as failure:
            grading.run(exercise, answering(answers), extra=True)
        assert "your answer is what" in str(failure.value) and words(mistake.hint) in words(str(failure.value))


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
    assert error.ename == "AssertionError"
    assert "Cell In[2], line 3, in box_iou\n        return widths[:, 7]" in error.evalue
    assert "skipping hidden 1 frame" in "\n".join(error.traceback)  # check_box_iou's own frame


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


def test_the_checker_leaves_the_learners_random_generator_alone(as_learner):
    state = torch.get_rng_state()
    grading.check_bottleneck(as_learner(components.COMPONENTS["bottleneck"].own), extra=True)
    assert torch.equal(torch.get_rng_state(), state)


# The learner's components beyond a lesson ------------------------------------------------------------------

SCALE = 1.0


def _half(x):
    return x / 2


def learner_box_iou(boxes1, boxes2):
    """A learner's box_iou with a helper, a module alias and a constant: all must be saved."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = F.relu(bottom_right - top_left).prod(dim=2) * SCALE
    area1 = _half(2 * (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1]))
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter)


def test_save_only_after_the_check_passed_then_load_it_back(course_home, capsys):
    assert grading.save_component("box_iou", learner_box_iou) is None
    assert "has to pass check_box_iou first" in capsys.readouterr().out
    grading.check_box_iou(learner_box_iou, extra=True)
    path = grading.save_component("box_iou", learner_box_iou)
    assert path == course_home / "components" / "box_iou.py"
    text = path.read_text()
    assert "import torch\n" in text and "import torch.nn.functional as F" in text and "SCALE = 1.0" in text
    assert "def _half(x):" in text and text.index("def _half") < text.index("def learner_box_iou")
    assert text.rstrip().endswith("box_iou = learner_box_iou")

    loaded = grading.load_components()
    assert set(loaded) == {"box_iou"} and loaded["box_iou"] is not learner_box_iou
    grading.check_box_iou(loaded["box_iou"], extra=True)  # the saved copy works on its own
    report = loaded.report()
    assert "  yours      box_iou" in report and "  reference  nms" in report


def test_a_saved_file_that_does_not_load_falls_back_to_the_reference(course_home):
    (course_home / "components").mkdir(parents=True)
    (course_home / "components" / "nms.py").write_text("def nms(boxes, scores, iou_threshold)\n")  # syntax error
    loaded = grading.load_components()
    assert "nms" not in loaded
    assert "reference  nms  (your saved file did not load: SyntaxError" in loaded.report()


def test_saving_never_breaks_grading(course_home, monkeypatch, capsys, tmp_path):
    grading.check_box_iou(learner_box_iou)
    monkeypatch.setenv("AUTOGRADING", "1")
    assert grading.save_component("box_iou", learner_box_iou) is None
    assert "not saved (autograding)" in capsys.readouterr().out
    monkeypatch.delenv("AUTOGRADING")
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("MRCNN_COURSE_HOME", str(blocked))
    with pytest.warns(UserWarning, match="box_iou was not saved"):
        assert grading.save_component("box_iou", learner_box_iou) is None
    with pytest.raises(ValueError, match="no component named 'boxiou'"):
        grading.save_component("boxiou", learner_box_iou)


TABLE = torch.zeros(3)


def uses_a_tensor(boxes1, boxes2):
    return learner_box_iou(boxes1, boxes2) + TABLE.sum()


def test_a_global_that_cannot_be_written_down_is_named(course_home):
    grading.check_box_iou(uses_a_tensor)
    with pytest.warns(UserWarning, match=r"uses the global 'TABLE' \(Tensor\), which cannot be saved"):
        assert grading.save_component("box_iou", uses_a_tensor) is None


def test_plug_into_model_compares_with_the_reference_and_skips_what_has_not_passed(capsys, as_learner):
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=3)
    images = [torch.rand(3, 64, 80)]
    nms = as_learner(box_ops.nms)
    grading.plug_into_model(model, images, nms=nms)
    assert "nms: not plugged in: it has to pass check_nms first" in capsys.readouterr().out
    grading.check_nms(nms)
    yours = grading.plug_into_model(model, images, nms=nms)
    assert "inference (detections), with your nms: same output as the reference: yes" in capsys.readouterr().out
    assert set(yours[0]) == {"boxes", "labels", "scores", "masks"}
    assert components.active("nms") == "own" and model.training  # both as they were


def test_plug_into_model_with_targets_compares_the_training_losses_and_leaves_the_model_alone(capsys, as_learner):
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=3).eval()
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 20:50] = 1
    targets = [{"boxes": torch.tensor([[20.0, 10, 50, 40]]), "labels": torch.tensor([1]), "masks": masks}]
    state = copy.deepcopy(model.state_dict())
    loss = as_learner(components.COMPONENTS["fastrcnn_loss"].own)
    grading.check_fastrcnn_loss(loss)
    yours = grading.plug_into_model(model, [torch.rand(3, 64, 64)], targets=targets, fastrcnn_loss=loss)
    assert "training (losses), with your fastrcnn_loss: same output as the reference: yes" in capsys.readouterr().out
    assert set(yours) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert not model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    def doubled(class_logits, box_regression, labels, regression_targets):
        return tuple(2 * part for part in loss(class_logits, box_regression, labels, regression_targets))

    grading.core._PASSED["fastrcnn_loss"] = doubled  # as if it had passed: the comparison must tell
    grading.plug_into_model(model, [torch.rand(3, 64, 64)], targets=targets, fastrcnn_loss=doubled)
    assert "same output as the reference: no: in output['loss_" in capsys.readouterr().out


def test_every_exercise_is_declared_once_and_exported_as_its_check():
    """The registry, the stages' __all__ and grading.check_<name> name the same exercises, each with a real
    function (signature and docstring) that a learner's Shift-Tab shows."""
    stages = [m for name, m in vars(grading).items() if name.startswith("exercises_")]
    exported = [check for stage in stages for check in stage.__all__]
    every = exercise.every_exercise()
    assert sorted(exported) == sorted(f"check_{name}" for name in every)
    for name in every:
        check = getattr(grading, f"check_{name}")
        assert list(inspect.signature(check).parameters) == [name, "extra"] and check.__doc__
