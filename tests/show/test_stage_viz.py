"""stage_viz: the prediction trace's panels carry the trace's own shapes and tensors; the explorers'
static pictures draw what they are given."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from mrcnn_course.model import box_ops
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.show import stage_viz, viz
from mrcnn_course.show.explorers import level_anchors
from mrcnn_course.show.roi_geometry import compare_roi_align_pool
from mrcnn_course.training import data

matplotlib.use("Agg")


def scene(size: int = 128) -> torch.Tensor:
    return data.make_scene(3, image_size=size)[0]


@pytest.fixture(scope="module")
def trace():
    torch.manual_seed(0)
    model = maskrcnn_small(box_score_thresh=0.0)  # untrained: keep every detection
    return model.trace(scene())


def middle_score(trace) -> float:
    """A score threshold that half the (untrained) trace's detections pass: the threshold matters in a test."""
    scores = trace.detections["scores"].sort().values
    return float(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def extents(ax) -> torch.Tensor:
    """Tensor[K, 4] float32: the (x1, y1, x2, y2) of the rectangles drawn on ax, in drawing order."""
    return torch.tensor(np.array([r.get_bbox().extents for r in rectangles(ax)]), dtype=torch.float32)


def test_trace_panels_are_titled_with_the_traces_shapes(trace):
    fig = stage_viz.draw_trace(trace, score_threshold=0.3)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 8 and [t[0] for t in titles] == list("12344566")
    s = trace.stages
    assert s[0].outputs["batch"] in titles[0] and s[1].outputs["P4"] in titles[1]
    assert s[2].outputs["proposals"] in titles[2] and s[3].outputs["box features"] in titles[4]
    assert s[4].outputs["class scores"] in titles[5] and s[5].outputs["mask logits"] in titles[6]
    assert s[5].outputs["masks"] in titles[7]


def test_trace_panels_draw_the_traces_tensors(trace):
    threshold = middle_score(trace)
    fig = stage_viz.draw_trace(trace, score_threshold=threshold, num_proposals=7, num_grids=2)
    axes = fig.axes
    torch.testing.assert_close(torch.as_tensor(axes[1].images[0].get_array()), trace[2].tensors["P4"][0].norm(dim=0))
    assert len(rectangles(axes[2])) == 7  # the top proposals
    best = trace[3].tensors["proposals"][trace[3].tensors["objectness"].argmax()]
    assert [round(v, 3) for v in rectangles(axes[2])[-1].get_bbox().extents] == [round(v, 3) for v in best.tolist()]
    assert len(axes[3].collections) == 2 * 3  # per box: bin lines x, bin lines y, sampling points
    shown = int((trace.detections["scores"] >= threshold).sum())
    assert 0 < shown < len(trace.detections["scores"])  # the threshold matters in this test
    assert len(axes[5].texts) == shown == len(rectangles(axes[7]))


def test_wrong_input_is_named(trace):
    with pytest.raises(ValueError, match="no FPN level 'P9'.*P2, P3, P4, P5, P6"):
        stage_viz.draw_trace(trace, level="P9")
    with pytest.raises(TypeError, match=r"model.trace\(image\).*not a dict.*draw_detections"):
        stage_viz.draw_trace(trace.detections)


def test_data_flow_figure_has_the_markdown_tables_rows(trace):
    fig = stage_viz.draw_data_flow(trace)
    cells = fig.axes[0].tables[0].get_celld()
    assert {column for _, column in cells} == {0, 1, 2, 3} and {row for row, _ in cells} == set(range(7))
    for stage in trace.stages:
        row = [cells[stage.number, c].get_text().get_text().replace("\n", " ") for c in range(4)]
        assert row[0] == f"{stage.number} {stage.name}"
        assert row[3] == stage.output_text() and stage.description in row[2]


def test_tile_leaves_a_blank_between_maps():
    tiled = stage_viz.tile(torch.ones(3, 2, 2), columns=2)
    assert tiled.shape == (5, 5)
    assert (tiled[:2, :2] == 1).all() and (tiled[2] != tiled[2]).all()  # NaN row between
    assert (tiled[3:, 3:] != tiled[3:, 3:]).all()  # the fourth place is empty


def test_anchor_picture_draws_one_locations_anchors():
    image = scene()
    anchors, grid, _ = level_anchors((128, 128), (32,), (0.5, 1.0, 2.0), 4)
    fig = stage_viz.draw_anchors(image, anchors, grid, location=(1, 2))
    drawn = sorted(tuple(r.get_bbox().extents) for r in rectangles(fig.axes[0]))
    assert drawn == sorted(tuple(a) for a in anchors.view(8, 8, 3, 4)[1, 2].tolist())
    assert len(fig.axes[0].collections[0].get_offsets()) == 64  # every location's centre


def test_nms_picture_marks_kept_and_suppressed_boxes():
    boxes = torch.tensor([[10.0, 10, 60, 60], [12, 12, 62, 58], [70, 70, 110, 110]])
    fig = stage_viz.draw_nms(scene(), boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 2]), 0.5)
    styles = [r.get_linestyle() for r in rectangles(fig.axes[0])]
    assert sorted(styles) == ["-", "-", "--"] and "2 of 3" in fig.axes[0].get_title()


def test_roi_align_picture_shows_both_outputs():
    feature = torch.rand(8, 10, generator=torch.Generator().manual_seed(0))
    readings = compare_roi_align_pool(feature, torch.tensor([1.3, 1.6, 6.8, 5.4]), (2, 3), 2)
    fig = stage_viz.draw_roi_align(feature, readings)
    align, aligned, pool, pooled = fig.axes
    torch.testing.assert_close(torch.as_tensor(aligned.images[0].get_array()), readings.align_output)
    torch.testing.assert_close(torch.as_tensor(pooled.images[0].get_array()), readings.pool_output)
    assert len(rectangles(pool)) == 6  # one quantized cell range per bin
    weights = [float(t.get_text()) for t in align.texts]  # bin (0, 0)'s weights, rounded: they sum to 1
    assert abs(sum(weights) - 1) < 0.05


def test_mask_threshold_picture_counts_pixels():
    pasted = torch.zeros(64, 64)
    pasted[10:20, 10:30] = 0.7
    pasted[10:20, 30:40] = 0.3
    fig = stage_viz.draw_mask_threshold(scene(64), torch.rand(28, 28), pasted, 0.5)
    assert "200 pixels" in fig.axes[1].get_title()


def test_trace_labels_each_crop_with_its_object_and_has_a_class_legend(trace):
    threshold = middle_score(trace)
    fig = stage_viz.draw_trace(trace, class_names=data.CLASSES, score_threshold=threshold, num_grids=3)
    axes = fig.axes
    crops = [t.get_text() for t in axes[4].texts]
    grids = [t.get_text() for t in axes[3].texts]
    assert grids == ["1", "2", "3"] and [c.split()[0] for c in crops] == grids  # grid n is crop n
    names = set(data.CLASSES)
    assert all(c.split(maxsplit=1)[1] in names for c in crops)  # the class the box head gives the proposal
    shown = min(int((trace.detections["scores"] >= threshold).sum()), 4)
    masks = [t.get_text() for t in axes[6].texts]
    assert len(masks) == shown and all(m.rsplit(" ", 1)[0] in names for m in masks)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(legend) == {r.get_label() for r in rectangles(axes[5])}


def test_trace_shows_roi_align_on_proposals_of_different_objects(trace):
    proposals, objectness = trace[3].tensors["proposals"], trace[3].tensors["objectness"]
    chosen = stage_viz.distinct_proposals(proposals, objectness, 3)
    assert len(chosen) == 3 and chosen[0] == objectness.argmax()
    iou = box_ops.box_iou(proposals[chosen], proposals[chosen])
    assert (iou.triu(1) <= stage_viz.DISTINCT_IOU).all()  # no two on the same object
    fig = stage_viz.draw_trace(trace, num_grids=3)
    assert len(fig.axes[3].collections) == 3 * 3  # per box: bin lines x, bin lines y, sampling points


def test_proposals_figure_is_titled_as_proposals_with_objectness_labels_apart():
    torch.manual_seed(0)
    image = scene()
    proposals = torch.tensor([[10.0, 10, 60, 60], [12, 11, 61, 59], [11, 12, 60, 62], [70, 70, 110, 110]])
    objectness = torch.tensor([0.95, 0.9, 0.85, 0.3])
    fig = stage_viz.draw_proposals(image, proposals, objectness, count=3)
    ax = fig.axes[0]
    assert ax.get_title().startswith("RPN proposals: the 3 best of 4, by objectness")
    assert "prediction" not in ax.get_title() and "score >=" not in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["0.95", "0.90", "0.85"]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "objectness"  # the colour scale
    fig.draw_without_rendering()
    extents = [t.get_window_extent() for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1 :])


def test_roi_align_weights_are_legible_on_a_zoomed_map():
    feature = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([3.3, 4.6, 9.8, 10.4])
    fig = stage_viz.draw_roi_align(feature, compare_roi_align_pool(feature, box, (3, 3), 2))
    align, pool = fig.axes[0], fig.axes[2]
    x0, x1 = align.get_xlim()
    assert x0 < 3.3 and 9.8 < x1 and x1 - x0 < 12 and pool.get_xlim() == (x0, x1)  # the box and a margin
    fig.draw_without_rendering()
    extents = [t.get_window_extent() for t in align.texts]
    assert len(extents) >= 4 and all(t.get_fontsize() >= 6 for t in align.texts)
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1 :])


def test_anchor_grid_dots_are_visible_and_the_location_is_marked():
    anchors, grid, _ = level_anchors((128, 128), (32,), (0.5, 1.0, 2.0), 4)
    fig = stage_viz.draw_anchors(scene(), anchors, grid)
    dots, chosen = fig.axes[0].collections[:2]
    assert min(dots.get_sizes()) >= 9 and len(chosen.get_offsets()) == 1  # 3 points across or more


def test_boxes_from_the_models_192_px_frame_land_on_their_objects_in_the_128_px_scene(trace):
    """The small model enlarges the 128-px scene to 192 px: its proposals and NMS candidates are in that
    frame. Drawn with frame=(192, 192) they are rescaled by 128 / 192; without it they are refused."""
    image = trace[1].tensors["image"]
    frame = tuple(trace[1].tensors["batch"].shape[-2:])
    assert tuple(image.shape[-2:]) == (128, 128) and frame == (192, 192)
    proposals, objectness = trace[3].tensors["proposals"], trace[3].tensors["objectness"]
    top = objectness.argsort(descending=True)[:5]
    in_scene = proposals[top] * 128 / 192  # where they must land
    fig = stage_viz.draw_proposals(image, proposals, objectness, count=5, frame=frame)
    drawn = extents(fig.axes[0]).flip(0)  # best drawn last
    torch.testing.assert_close(drawn, in_scene, atol=1e-4, rtol=0)
    keep = box_ops.nms(proposals[top], objectness[top], 0.5)
    fig = stage_viz.draw_nms(image, proposals[top], objectness[top], keep, 0.5, frame=frame)
    distances = torch.cdist(in_scene, extents(fig.axes[0]))  # kept and suppressed alike
    assert len(rectangles(fig.axes[0])) == 5 and distances.min(dim=1).values.max() < 1e-3
    assert proposals.max() > 128 * 1.1 + 1  # the untrained RPN's proposals reach the 192-px frame's edge
    for draw in (
        lambda: stage_viz.draw_proposals(image, proposals, objectness),
        lambda: stage_viz.draw_nms(image, proposals, objectness, keep, 0.5),
        lambda: viz.draw_detections(
            image, {"boxes": proposals, "labels": torch.ones(len(proposals), dtype=torch.long)}
        ),
    ):
        with pytest.raises(ValueError, match=r"beyond this 128x128 image: .* Pass frame=\(H, W\)"):
            draw()


def test_detections_and_a_prediction_in_another_frame_are_drawn_in_the_images(trace):
    image = trace[1].tensors["image"]
    detections = {k: trace.detections[k] for k in ("boxes", "labels", "scores")}  # already in the scene's pixels
    fig = viz.draw_detections(image, detections, score_threshold=0.0)
    drawn = extents(fig.axes[0])
    assert len(drawn) == len(detections["boxes"]) and drawn.max() <= 128
    in_batch = {**detections, "boxes": detections["boxes"] * 1.5}  # the same boxes, in the 192-px frame
    fig = viz.draw_detections(image, in_batch, score_threshold=0.0, frame=(192, 192))
    torch.testing.assert_close(
        extents(fig.axes[0]).sort(dim=0).values,
        drawn.sort(dim=0).values,
        atol=1e-4,
        rtol=0,
    )
