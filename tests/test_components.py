"""components: which implementation runs, switching, restoring, and clear errors."""

import pytest
import torch
import torchvision

from mrcnn_course.model import box_ops, components


@pytest.fixture(autouse=True)
def clean():
    components.reset()
    yield
    components.reset()


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
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    assert torch.equal(
        components.nms(boxes, torch.tensor([0.9, 0.8]), 0.5), torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    )


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
