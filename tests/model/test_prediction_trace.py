"""model.trace: the six stages' records come from the live model, with torchvision's R-50-FPN shapes."""

import pytest
import torch

from mrcnn_course.model import box_ops, components
from mrcnn_course.model.maskrcnn import maskrcnn_resnet50_fpn, maskrcnn_small


@pytest.fixture(scope="module")
def r50_trace():
    """An 800-px image through the R-50-FPN model (slow: a few seconds on 2 cores; tests using it are slow)."""
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(box_score_thresh=0.0)
    return model.trace(torch.rand(3, 800, 800))


@pytest.mark.slow
def test_r50_800px_flow_matches_the_course_card(r50_trace):
    stages = r50_trace.stages
    assert [s.number for s in stages] == [1, 2, 3, 4, 5, 6]
    assert [s.name for s in stages] == [
        "Input image",
        "Backbone CNN",
        "Region Proposal Network",
        "RoI Align",
        "Box & classifier head",
        "Mask head",
    ]
    assert stages[0].inputs == {"image": "3x800x800"} and stages[0].outputs == {"batch": "1x3x800x800"}
    assert stages[1].outputs["P4"] == "1x256x50x50"  # the stride-16 map
    assert list(stages[1].outputs) == ["P2", "P3", "P4", "P5", "P6"]
    assert stages[2].outputs == {"proposals": "1000x4", "objectness": "1000"}
    assert stages[3].outputs["box features"] == "1000x256x7x7"
    detections = len(r50_trace.detections["boxes"])
    assert stages[3].outputs["mask features"] == f"{detections}x256x14x14"
    assert stages[4].outputs["class scores"] == "1000x91"
    assert stages[4].outputs["refined boxes"] == "1000x91x4"
    assert stages[5].outputs == {"mask logits": f"{detections}x91x28x28", "masks": f"{detections}x1x800x800"}
    assert "7x7" in stages[3].note  # the FPN box head pools 7x7: the record says so
    assert "FPN" in stages[1].note


@pytest.mark.slow
def test_records_hold_the_tensors_they_describe(r50_trace):
    for stage in r50_trace.stages:
        assert stage.tensors, stage.name
    assert tuple(r50_trace[2].tensors["P4"].shape) == (1, 256, 50, 50)
    assert r50_trace[3].tensors["objectness"].min() >= 0  # probabilities, not logits


@pytest.mark.slow
def test_markdown_table_has_a_row_per_stage(r50_trace):
    table = r50_trace.to_markdown().splitlines()
    assert table[0].startswith("| # | Stage | Input | What it does | Output |")
    assert len(table) == 2 + 6
    assert "1x256x50x50" in table[3]


def test_trace_leaves_training_mode_alone():
    model = maskrcnn_small().train()
    trace = model.trace(torch.rand(3, 100, 140))
    assert model.training
    assert trace[1].outputs["batch"] == "1x3x160x192"  # 100x140 scaled by 192/140 (max_size): 137x192, padded to 32


def test_the_trace_records_which_implementation_of_each_component_ran():
    def my_nms(boxes, scores, iou_threshold):
        return box_ops.nms(boxes, scores, iou_threshold)

    model = maskrcnn_small().eval()
    with components.using(nms=my_nms, roi_align="torchvision"):
        trace = model.trace(torch.rand(3, 64, 64))
    assert list(trace.components) == list(components.NAMES)
    assert trace.components["nms"].endswith("my_nms") and trace.components["roi_align"] == "torchvision"
    assert trace.components["fpn_top_down"] == "own"
    assert trace.components["residual_block"] == "own"  # the small model's BasicBlocks run it
    assert trace.components["fastrcnn_loss"] == components.NOT_CALLED  # a loss: training only
