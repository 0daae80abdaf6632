"""explorers: each control's callback computes with the active components and redraws the picture."""

import pytest
import torch

from mrcnn_course.model import components
from mrcnn_course.model.input_image import ImageList
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.model.roi_align import roi_align
from mrcnn_course.show import explorers

BOXES = torch.tensor([[10.0, 10, 60, 60], [14, 12, 62, 58], [20, 20, 70, 66], [70, 70, 110, 110], [72, 75, 112, 108]])
SCORES = torch.tensor([0.9, 0.8, 0.75, 0.7, 0.6])


def image(height: int = 128, width: int = 128) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))


def test_nms_explorer_keeps_what_components_nms_keeps_at_every_threshold():
    explorer = explorers.nms_explorer(image(), BOXES, SCORES, iou_threshold=0.5)
    kept_counts = set()
    for threshold in (0.05, 0.3, 0.5, 0.7, 0.95):
        explorer.controls["iou_threshold"].value = threshold
        expected = components.nms(BOXES, SCORES, threshold)
        assert explorer.result["keep"].tolist() == expected.tolist()
        assert f"keeps {len(expected)} of 5" in explorer.summary.value
        kept_counts.add(len(expected))
    assert len(kept_counts) >= 3  # the thresholds chosen do change the answer


def test_moving_the_slider_redraws_the_picture():
    explorer = explorers.nms_explorer(image(), BOXES, SCORES, iou_threshold=0.9)
    before = explorer.picture.value
    assert bytes(before).startswith(b"\x89PNG")
    explorer.controls["iou_threshold"].value = 0.3
    assert explorer.picture.value != before


def test_a_learners_nms_shows_in_the_explorer():
    keep_first = lambda boxes, scores, iou_threshold: torch.tensor([0])  # noqa: E731
    with components.using(nms=keep_first):
        explorer = explorers.nms_explorer(image(), BOXES, SCORES)
    assert explorer.result["keep"].tolist() == [0]


def test_nms_explorer_wants_matching_boxes_and_scores():
    with pytest.raises(ValueError, match=r"boxes Tensor\[N, 4\] and scores Tensor\[N\]"):
        explorers.nms_explorer(image(), BOXES, SCORES[:3])


@pytest.mark.parametrize("height, width", [(128, 128), (100, 140)])
def test_anchor_explorer_gives_the_models_anchors_level_by_level(height, width):
    model = maskrcnn_small()
    generator = model.rpn.anchor_generator
    padded = (-(-height // 32) * 32, -(-width // 32) * 32)
    maps = [torch.zeros(1, 1, -(-padded[0] // 2**l), -(-padded[1] // 2**l)) for l in range(2, 7)]
    expected = generator(ImageList(torch.zeros(1, 3, *padded), [(height, width)]), maps)[0]
    per_level = expected.split([m.shape[-2] * m.shape[-1] * 3 for m in maps])
    explorer = explorers.anchor_explorer(image(height, width))
    for level, want in zip(range(2, 7), per_level):
        explorer.controls["level"].value = level
        explorer.controls["size"].value = generator.sizes[level - 2][0]
        assert torch.equal(explorer.result["anchors"], want), f"P{level}"


def test_anchor_explorer_redraws_and_explains_an_empty_choice():
    explorer = explorers.anchor_explorer(image(), level=4)
    first = explorer.picture.value
    assert "8x8 locations, stride 16 px, 3 anchors each: 192 anchors" in explorer.summary.value
    explorer.controls["aspect_ratios"].value = (1.0,)
    assert explorer.picture.value != first and explorer.result["anchors"].shape == (64, 4)
    explorer.controls["aspect_ratios"].value = ()
    assert "at least one" in explorer.summary.value
    assert explorer.result["anchors"].shape == (64, 4)  # the last good picture stays


def test_level_anchors_rejects_a_level_the_model_lacks():
    with pytest.raises(ValueError, match="P2 to P6"):
        explorers.level_anchors((128, 128), (32,), (1.0,), 7)


def test_roi_align_explorer_reads_with_components_roi_align():
    explorer = explorers.roi_align_explorer()
    feature = explorers.demo_feature()
    for name, value in (("x2", 8.3), ("output_size", 3), ("sampling_ratio", 1)):
        before = explorer.picture.value
        explorer.controls[name].value = value
        assert explorer.picture.value != before, name
    values = {name: c.value for name, c in explorer.controls.items()}
    box = torch.tensor([[0.0, values["x1"], values["y1"], values["x2"], values["y2"]]])
    expected = roi_align(feature[None, None], box, 3, 1.0, 1)[0, 0]
    torch.testing.assert_close(explorer.result["readings"].align_output, expected)


def test_roi_align_explorer_explains_an_empty_box():
    explorer = explorers.roi_align_explorer()
    explorer.controls["x2"].value = 1.0  # left of x1 = 1.3
    assert "is empty: x2 must exceed x1" in explorer.summary.value


@pytest.fixture(scope="module")
def trace():
    torch.manual_seed(0)
    return maskrcnn_small(box_score_thresh=0.0).trace(image())


def test_mask_threshold_explorer_counts_the_pasted_pixels_above_the_threshold(trace):
    explorer = explorers.mask_threshold_explorer(trace, index=0)
    pasted = trace.detections["masks"][0, 0]
    counts = []
    for threshold in (0.1, 0.5, 0.9):
        explorer.controls["threshold"].value = threshold
        assert explorer.result["pixels"] == int((pasted > threshold).sum())
        counts.append(explorer.result["pixels"])
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_mask_of_a_missing_detection_is_explained(trace):
    with pytest.raises(ValueError, match="has 20 detections, so no detection 20"):
        explorers.detection_mask(trace, 20)


def test_every_control_label_is_shown_whole():
    for explorer in (
        explorers.nms_explorer(image(), BOXES, SCORES),
        explorers.anchor_explorer(image()),
        explorers.roi_align_explorer(),
    ):
        for control in explorer.controls.values():
            assert control.style.description_width == "initial", control.description


def test_anchor_explorer_says_how_to_choose_several_ratios():
    explorer = explorers.anchor_explorer(image())
    assert "Ctrl-click" in explorer.hint.value and "Cmd-click" in explorer.hint.value
    assert explorer.hint in explorer.children[0].children  # beside the controls
    nms = explorers.nms_explorer(image(), BOXES, SCORES)
    assert nms.hint not in nms.children[0].children  # no hint, no empty box


def test_roi_align_explorer_sliders_start_on_their_steps():
    explorer = explorers.roi_align_explorer(box=tuple(torch.tensor([1.3, 1.6, 6.8, 5.4]).tolist()))  # float32 noise
    assert [explorer.controls[name].value for name in ("x1", "y1", "x2", "y2")] == [1.3, 1.6, 6.8, 5.4]
