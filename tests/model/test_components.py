"""components: which implementation runs, switching, restoring, and clear errors."""

import ast
import inspect
from pathlib import Path

import pytest
import torch
import torchvision

from mrcnn_course.model import box_ops, components, torchvision_ops
from mrcnn_course.model.maskrcnn import maskrcnn_small


def test_every_component_defaults_to_the_package_and_is_listed():
    table = components.summary()
    for name in components.NAMES:
        assert components.active(name) == "own"
        assert name in table
    assert "1 input image" in table and "6 mask head" in table


def test_every_component_has_a_torchvision_counterpart():
    missing = [n for n in components.NAMES if components.COMPONENTS[n].torchvision is None]
    assert missing == []


def test_use_and_reset():
    def my_nms(boxes, scores, iou_threshold):
        return torch.arange(len(boxes))

    components.use("nms", my_nms)
    assert components.active("nms").endswith("my_nms")
    assert torch.equal(components.nms(torch.zeros(3, 4), torch.zeros(3), 0.5), torch.arange(3))
    components.reset("nms")
    assert components.active("nms") == "own"


def test_using_restores_even_after_an_error():
    with pytest.raises(RuntimeError):
        with components.using(nms="torchvision", roi_align="torchvision"):
            assert components.active("nms") == "torchvision"
            raise RuntimeError("boom")
    assert components.active("nms") == components.active("roi_align") == "own"


def test_use_torchvision_switches_all_counterparts():
    components.use_torchvision()
    assert all(components.active(n) == "torchvision" for n in components.NAMES)
    assert all(components.COMPONENTS[n].active is getattr(torchvision_ops, n) for n in components.NAMES)
    # what runs is torchvision's function itself, and a recording says so
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    with components.recording() as ran:
        keep = components.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert components.COMPONENTS["nms"].active is torchvision.ops.nms and ran == {"nms": "torchvision"}
    assert keep.tolist() == [0]


def test_wrong_signature_is_refused_with_a_message():
    def nms_without_threshold(boxes, scores):
        return boxes

    with pytest.raises(TypeError, match=r"model calls nms\(boxes, scores, iou_threshold\)"):
        components.use("nms", nms_without_threshold)


def test_unknown_name_and_bad_value():
    with pytest.raises(KeyError, match="no component named 'nmss'"):
        components.use("nmss", box_ops.nms)
    with pytest.raises(TypeError, match="'own', 'torchvision' or a function"):
        components.use("nms", 42)


def test_forwarders_have_the_real_signature_and_docstring():
    for name in components.NAMES:
        own = components.COMPONENTS[name].own
        forwarder = getattr(components, name)
        assert inspect.signature(forwarder) == inspect.signature(own), name
        assert inspect.getdoc(own) in forwarder.__doc__, name
        assert forwarder.__name__ == name and forwarder.__module__ == "mrcnn_course.model.components"


def test_a_recording_says_what_ran_and_what_the_model_never_called():
    def my_box_iou(boxes1, boxes2):
        return box_ops.box_iou(boxes1, boxes2)

    model = maskrcnn_small(num_classes=3).eval()  # detection only: the losses never run
    with components.using(box_iou=my_box_iou), components.recording() as ran, torch.no_grad():
        model([torch.rand(3, 64, 64)])
    report = components.ran_report(ran)
    assert report["fastrcnn_loss"] == components.NOT_CALLED
    assert report["nms"] == report["roi_align"] == report["residual_block"] == "own"
    assert report["box_iou"].endswith("my_box_iou")  # the package's NMS calls box_iou through the registry
    table = components.summary(ran)
    assert "ran" in table.splitlines()[0]
    loss_row = next(line for line in table.splitlines() if " fastrcnn_loss " in line)
    assert components.NOT_CALLED in loss_row


def test_print_model_names_the_swapped_components():
    model = maskrcnn_small(num_classes=3)
    assert "components: all the package's own" in repr(model)
    with components.using(nms="torchvision"):
        assert "components: nms=torchvision" in repr(model)


def test_type_checkers_see_each_forwarder_as_the_packages_own_function():
    """components.py imports every component's own function under `if TYPE_CHECKING:` (never at run time:
    the stage modules import components), so editors and type checkers show the real signature."""
    tree = ast.parse(Path(components.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {
        alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert imported == {name: f"mrcnn_course.model.{c.module}" for name, c in components.COMPONENTS.items()}
