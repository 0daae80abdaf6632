"""mrcnn_course.teaching.grading.learner: the learner's components beyond a lesson: saved only after their
check passed (with their helpers, imports and constants), loaded back, never breaking grading, and plugged
into the model to compare with the reference."""

import copy

import pytest
import torch
import torch.nn.functional as F

from mrcnn_course.model import box_ops, components
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.teaching import grading

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
    path = course_home / "components" / "box_iou.py"
    grading.save_component("box_iou", learner_box_iou)
    assert "has to pass check_box_iou first" in capsys.readouterr().out and not path.exists()
    grading.check_box_iou(learner_box_iou, extra=True)
    assert grading.save_component("box_iou", learner_box_iou) is None  # a cell ending with it shows no value
    assert capsys.readouterr().out.endswith(f"\nbox_iou: saved to {path}\n")
    text = path.read_text()
    assert "import torch\n" in text and "import torch.nn.functional as F" in text and "SCALE = 1.0" in text
    assert "def _half(x):" in text and text.index("def _half") < text.index("def learner_box_iou")
    assert text.rstrip().endswith("box_iou = learner_box_iou")

    loaded = grading.load_components()
    assert set(loaded) == {"box_iou"} and loaded["box_iou"] is not learner_box_iou
    grading.check_box_iou(loaded["box_iou"], extra=True)  # the saved copy works on its own
    report = loaded.report()
    assert "  yours      box_iou" in report and "  reference  nms" in report


def test_under_autograding_nothing_saved_on_the_grading_machine_is_loaded(course_home, monkeypatch):
    grading.check_box_iou(learner_box_iou)
    grading.save_component("box_iou", learner_box_iou)  # the grading machine's owner solved box_iou once
    monkeypatch.setenv("AUTOGRADING", "1")
    loaded = grading.load_components()
    assert dict(loaded) == {} and "  reference  box_iou  (autograding: the reference runs)" in loaded.report()


def test_a_saved_file_that_does_not_load_falls_back_to_the_reference(course_home):
    (course_home / "components").mkdir(parents=True)
    (course_home / "components" / "nms.py").write_text("def nms(boxes, scores, iou_threshold)\n")  # syntax error
    loaded = grading.load_components()
    assert "nms" not in loaded
    assert "reference  nms  (your saved file did not load: SyntaxError" in loaded.report()


def test_a_saved_component_edited_by_hand_to_be_wrong_is_not_loaded_as_yours(course_home):
    grading.check_box_iou(learner_box_iou, extra=True)  # extra: the hidden cases, and no speed case to wait for
    grading.save_component("box_iou", learner_box_iou)
    path = course_home / "components" / "box_iou.py"
    path.write_text(path.read_text().replace("- inter)", "+ inter)"))  # a union that counts the overlap twice
    (course_home / "components" / "remove_small_boxes.py").write_text(  # saved by hand: it has no check
        "def remove_small_boxes(boxes, min_size):\n    return boxes\n"
    )
    loaded = grading.load_components()
    assert set(loaded) == set() and set(loaded.problems) == {"box_iou", "remove_small_boxes"}
    report = loaded.report()
    assert (
        "  reference  box_iou  (your saved box_iou was not loaded: it fails its own check, case '" in report
        and "; fix it in its lesson, pass check_box_iou, save it again)" in report
    )
    assert "  reference  remove_small_boxes  (your saved remove_small_boxes was not loaded: no check exists" in report


def test_saving_never_breaks_grading(course_home, monkeypatch, capsys, tmp_path):
    grading.check_box_iou(learner_box_iou)
    monkeypatch.setenv("AUTOGRADING", "1")
    grading.save_component("box_iou", learner_box_iou)
    assert "not saved (autograding)" in capsys.readouterr().out
    assert not (course_home / "components" / "box_iou.py").exists()
    monkeypatch.delenv("AUTOGRADING")
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("MRCNN_COURSE_HOME", str(blocked))
    with pytest.warns(UserWarning, match="box_iou was not saved"):
        grading.save_component("box_iou", learner_box_iou)
    with pytest.raises(ValueError, match="no component named 'boxiou'"):
        grading.save_component("boxiou", learner_box_iou)


TABLE = torch.zeros(3)


def uses_a_tensor(boxes1, boxes2):
    return learner_box_iou(boxes1, boxes2) + TABLE.sum()


def test_a_global_that_cannot_be_written_down_is_named(course_home):
    grading.check_box_iou(uses_a_tensor)
    with pytest.warns(UserWarning, match=r"uses the global 'TABLE' \(Tensor\), which cannot be saved"):
        grading.save_component("box_iou", uses_a_tensor)
    assert not (course_home / "components" / "box_iou.py").exists()


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


def nms(boxes, scores, iou_threshold):
    """A learner's first version: the greedy loop."""
    order = scores.argsort(descending=True)
    kept = []
    while len(order) > 0:
        kept.append(int(order[0]))
        overlap = components.box_iou(boxes[order[0]][None], boxes[order[1:]])[0]
        order = order[1:][~(overlap > iou_threshold)]
    return torch.tensor(kept, dtype=torch.int64)


def nms_fast(boxes, scores, iou_threshold):
    """A learner's fast version: settle every box at once, again until nothing changes."""
    order = scores.argsort(descending=True)
    overlaps = (components.box_iou(boxes[order], boxes[order]) > iou_threshold).triu(diagonal=1)
    keep = torch.ones(len(order), dtype=torch.bool)
    while not torch.equal(new := ~overlaps[keep].any(dim=0), keep):
        keep = new
    return order[keep]


def save_both(which: tuple[str, ...]) -> None:
    """Pass the named versions' checks (the hidden cases: no speed case to wait for) and save them."""
    for name, function in (("nms", nms), ("nms_fast", nms_fast)):
        if name in which:
            getattr(grading, f"check_{name}")(function, extra=True)
            grading.save_component(name, function)
            assert (grading.course_home() / "components" / f"{name}.py").is_file()


def test_the_fast_version_runs_when_it_passed_and_was_saved(course_home):
    save_both(("nms", "nms_fast"))
    loaded = grading.load_components(("nms",))
    assert loaded["nms"].__name__ == "nms_fast"
    assert "  yours      nms  (your nms_fast: the matrix form)" in loaded.report()


def test_the_first_version_runs_without_the_fast_one_and_the_report_says_what_it_costs(course_home):
    save_both(("nms",))
    loaded = grading.load_components(("nms",))
    assert loaded["nms"].__name__ == "nms"
    line = next(line for line in loaded.report().splitlines() if " nms " in f"{line} ")
    assert line.startswith("  yours      nms  (your nms: the greedy loop; nms_fast not passed or not saved: slower")
    assert "fit_to_budget" in line


def test_a_fast_version_edited_to_be_wrong_falls_back_to_the_first_and_says_why(course_home):
    save_both(("nms", "nms_fast"))
    path = course_home / "components" / "nms_fast.py"
    path.write_text(path.read_text().replace("> iou_threshold", ">= iou_threshold"))  # an IoU equal to t suppresses
    loaded = grading.load_components(("nms",))
    assert loaded["nms"].__name__ == "nms"
    assert "nms_fast not used: your saved nms_fast was not loaded: it fails its own check, case '" in loaded.report()
    path.write_text("def nms_fast(boxes, scores, iou_threshold)\n")  # and the first version gone too: the reference
    (course_home / "components" / "nms.py").unlink()
    loaded = grading.load_components(("nms",))
    assert "nms" not in loaded
    assert "  reference  nms  (your saved file did not load: SyntaxError" in loaded.report()


def test_a_fast_version_is_plugged_in_by_its_own_name_and_never_beside_the_first(capsys):
    grading.core._PASSED.pop("nms_fast", None)  # as in a new session (an earlier test passed it)
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=3)
    images = [torch.rand(3, 64, 80)]
    grading.plug_into_model(model, images, nms_fast=nms_fast)
    assert "nms_fast: not plugged in: it has to pass check_nms_fast first (the model uses the reference nms)" in (
        capsys.readouterr().out
    )
    grading.check_nms_fast(nms_fast, extra=True)
    grading.plug_into_model(model, images, nms_fast=nms_fast)
    assert "with your nms_fast: same output as the reference: yes" in capsys.readouterr().out
    with pytest.raises(ValueError, match="nms and nms_fast are two versions of the component nms: plug in one"):
        grading.plug_into_model(model, images, nms=nms, nms_fast=nms_fast)
    with pytest.raises(ValueError, match="no component named 'nms_faster'.*their fast versions: nms_fast"):
        grading.save_component("nms_faster", nms_fast)
