"""overview_card: lesson 0's card puts the overview's numbers beside shapes computed from the live models:
the ResNet-50-FPN on the meta device (checked against torchvision's own, also on the meta device) and the
small model's trace."""

import pytest
import torch
import torchvision

from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.show.overview_card import OVERVIEW, overview_card, resnet50_fpn_shapes, small_model_shapes
from mrcnn_course.training import data


@pytest.fixture(scope="module")
def trace():
    torch.manual_seed(0)
    return maskrcnn_small().trace(data.make_scene(3, image_size=128)[0])


def test_the_resnet50_fpn_column_is_torchvisions_model_shapes():
    with torch.device("meta"):
        reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
        images, _ = reference.transform([torch.zeros(3, 800, 800)])
        maps = reference.backbone(images.tensors)
    shapes = resnet50_fpn_shapes(800)
    levels = [f"P{level} {'x'.join(map(str, m.shape))}" for level, m in enumerate(maps.values(), start=2)]
    assert shapes["features"] == ", ".join(levels) and "P4 1x256x50x50" in shapes["features"]
    assert shapes["image"] == "batch 1x3x800x800"
    assert (
        shapes["boxes"] == f"proposals up to {reference.rpn._post_nms_top_n['testing']}x4" == "proposals up to 1000x4"
    )
    heads = reference.roi_heads
    assert shapes["regions"] == (
        f"box head 1000x256x{heads.box_roi_pool.output_size[0]}x{heads.box_roi_pool.output_size[1]}, "
        f"mask head up to {heads.detections_per_img}x256x14x14"
    )
    assert shapes["masks"] == "mask logits up to 100x91x28x28 (91 classes)"


def test_the_shapes_follow_the_models_own_resize_rule():
    shapes = resnet50_fpn_shapes(320)  # computed by the model's stage 1, not typed for 800
    assert shapes["image"] == "batch 1x3x800x800"  # min_size 800 enlarges a 320x320 image
    assert "P4 1x256x50x50" in shapes["features"]
    wide = resnet50_fpn_shapes(640)
    assert wide["image"] == "batch 1x3x800x800" and "P6 1x256x13x13" in wide["features"]


def test_the_small_model_column_is_its_trace(trace):
    shapes = small_model_shapes(trace)
    assert shapes["image"] == f"image {trace[1].inputs['image']} -> batch {trace[1].outputs['batch']}"
    assert trace[2].outputs["P4"] in shapes["features"] and trace[3].outputs["proposals"] in shapes["boxes"]
    assert trace[4].outputs["box features"] in shapes["regions"] and trace[6].outputs["mask logits"] in shapes["masks"]


def test_the_card_is_one_table_with_the_overviews_numbers_and_the_simplifications(trace):
    card = overview_card(trace).splitlines()
    assert len(card) == 2 + len(OVERVIEW) and all(line.count("|") == 6 for line in card)
    for line, (row, number) in zip(card[2:], OVERVIEW.items()):
        assert line.startswith(f"| {row} | {number} | ")
    text = "\n".join(card)
    assert "C4: 50x50x1024" in text and "7x7" in text and "only for the detections" in text
