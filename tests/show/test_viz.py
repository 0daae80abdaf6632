"""viz: images with their instances, a training run's curves and predictions; figures that display in a
notebook without pyplot."""

import math
from pathlib import Path

import matplotlib
import pytest
import torch
from matplotlib.patches import Rectangle

from mrcnn_course.show import viz
from mrcnn_course.training.training_trace import LOSS_PARTS, TrainingTrace

matplotlib.use("Agg")
NAMES = ("background", "square", "circle", "triangle")


def two_squares():
    """A grey 64x64 image with two coloured squares, and their target and a prediction."""
    image = torch.full((3, 64, 64), 0.8)
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 5:25, 5:25] = 1
    masks[1, 30:60, 28:58] = 1
    image[:, masks[0].bool()] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    image[:, masks[1].bool()] = torch.tensor([0.1, 0.1, 0.9])[:, None]
    target = {
        "boxes": torch.tensor([[5.0, 5, 25, 25], [28, 30, 58, 60]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
    }
    prediction = {
        "boxes": torch.tensor([[4.0, 6, 25, 24], [28, 30, 57, 60], [0, 0, 10, 10]]),
        "labels": torch.tensor([1, 2, 3]),
        "scores": torch.tensor([0.9, 0.6, 0.2]),
        "masks": torch.cat([masks.float(), torch.zeros(1, 64, 64)])[:, None] * 0.8,
    }
    return image, target, prediction


def rectangles(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_prediction_panel_draws_the_boxes_above_the_threshold_with_labels_and_scores():
    image, target, prediction = two_squares()
    fig = viz.draw_detections(image, prediction, target, class_names=NAMES, score_threshold=0.5)
    truth, predicted = fig.axes
    assert "2 of 2" in truth.get_title() and "2 of 3, score >= 0.5" in predicted.get_title()
    assert [t.get_text() for t in predicted.texts] == ["square 0.90", "circle 0.60"]
    assert [t.get_text() for t in truth.texts] == ["square", "circle"]
    colours = [p.get_edgecolor() for p in rectangles(predicted)]
    assert len(colours) == 2 and colours[0] != colours[1]  # two classes, two colours


def test_masks_of_two_classes_are_painted_apart():
    image, target, _ = two_squares()
    fig = viz.draw_detections(image, target=target)
    overlay = fig.axes[0].images[-1].get_array()  # (H, W, 4): the masks' layer
    assert overlay[10, 10, 3] > 0 and overlay[40, 40, 3] > 0 and overlay[2, 60, 3] == 0
    assert tuple(overlay[10, 10, :3]) != tuple(overlay[40, 40, :3])


def test_unlabelled_classes_get_a_readable_name():
    image, target, _ = two_squares()
    fig = viz.draw_detections(image, target=target)  # no class names
    assert [t.get_text() for t in fig.axes[0].texts] == ["class 1", "class 2"]


def test_bad_input_says_what_to_do():
    image, target, prediction = two_squares()
    with pytest.raises(ValueError, match="nothing to draw"):
        viz.draw_detections(image)
    with pytest.raises(ValueError, match=r"Tensor\[3, H, W\].*to_image_tensor"):
        viz.draw_detections(image.permute(1, 2, 0), target=target)
    with pytest.raises(ValueError, match="masks are .* the image they belong to"):
        viz.draw_detections(image[:, :32], target=target)
    with pytest.raises(ValueError, match=r"boxes Tensor\[T, 4\]"):
        viz.draw_detections(image, target={**target, "boxes": target["boxes"][:1]})


def test_uint8_and_float_images_look_the_same():
    image, _, _ = two_squares()
    as_bytes = (image * 255).round().to(torch.uint8)
    assert abs(viz.to_display(as_bytes) - viz.to_display(image)).max() < 1 / 255


def test_figures_render_as_png_without_pyplot():
    import matplotlib.pyplot as plt

    image, target, prediction = two_squares()
    before = plt.get_fignums()
    fig = viz.draw_detections(image, prediction, target)
    assert plt.get_fignums() == before  # not registered with pyplot: never shown twice, never leaked
    png = fig._repr_png_()  # what Jupyter calls to display it
    assert png.startswith(b"\x89PNG") and png == viz.figure_png(fig)


# the browser test's small trace
TRACE_JSON = Path(__file__).parents[1] / "end_to_end" / "notebooks" / "training_trace.json"


def test_training_curves_grow_with_the_epoch_on_fixed_axes():
    trace = TrainingTrace.load(TRACE_JSON)
    first, last = viz.draw_training_curves(trace, 1), viz.draw_training_curves(trace, len(trace.epochs))
    losses, metrics = last.axes[:2]
    plotted = {line.get_label(): line for line in losses.lines if not line.get_label().startswith("_")}
    assert set(plotted) == {"total"} | {part.removeprefix("loss_") for part in LOSS_PARTS}
    assert list(plotted["mask"].get_ydata()) == [r.train_losses["loss_mask"] for r in trace.epochs]
    assert len(first.axes[0].lines[0].get_xdata()) == 1
    assert first.axes[0].get_xlim() == losses.get_xlim() and first.axes[0].get_ylim() == losses.get_ylim()
    assert metrics.lines[0].get_ydata()[-1] == trace.epochs[-1].recall
    # a trace saved before precision was measured (its "accuracy" is the recall): no precision points
    assert trace.epochs[-1].precision is None and all(math.isnan(y) for y in metrics.lines[1].get_ydata())
    with pytest.raises(ValueError, match="has epochs 1 to"):
        viz.draw_training_curves(trace, 0)


def test_epoch_predictions_are_drawn_from_the_trace_alone():
    trace = TrainingTrace.load(TRACE_JSON)
    fig = viz.draw_epoch_predictions(trace, 1, count=5, score_threshold=0.1)
    assert len(fig.axes) == len(trace.val_images)  # no more than the trace holds
    expected = trace.predictions(1, 0)
    shown = int((expected["scores"] >= 0.1).sum())
    assert shown > 0  # the trace's barely trained model scores under 0.25
    assert len(fig.axes[0].texts) == shown
    assert f"{shown} predicted, {len(trace.target(0)['labels'])} objects" in fig.axes[0].get_title()


def test_a_notebook_shows_a_returned_figure_once():
    import nbclient
    import nbformat

    code = (
        "import matplotlib.pyplot as plt  # the inline backend, as in a lesson\nimport torch\n"
        "from mrcnn_course.show import viz\n"
        "image = torch.rand(3, 32, 32)\n"
        "viz.draw_detections(image, target={'boxes': torch.tensor([[2.0, 2, 20, 20]]), 'labels': torch.tensor([1])})"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    outputs = notebook.cells[0].outputs
    assert [o.output_type for o in outputs] == ["execute_result"] and "image/png" in outputs[0].data


def label_extents(ax):
    """The drawn labels' boxes on the screen (after the figure was drawn: labels are placed then)."""
    return [t.get_window_extent() for t in ax.texts]


def test_one_colour_per_class_in_every_panel_with_a_legend():
    image, target, prediction = two_squares()
    target = {key: torch.cat([value, value[:1]]) for key, value in target.items()}  # a second square
    fig = viz.draw_detections(image, prediction, target, class_names=NAMES, score_threshold=0.5)
    truth, predicted = fig.axes
    colour = {}
    for ax in (truth, predicted):
        for patch in rectangles(ax):
            assert colour.setdefault(patch.get_label(), patch.get_edgecolor()) == patch.get_edgecolor()
    assert set(colour) == {"square", "circle"} and colour["square"] != colour["circle"]
    assert colour["square"][:3] == viz.class_colour(1) and colour["circle"][:3] == viz.class_colour(2)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["square", "circle"]  # in class order
    assert [tuple(h.get_facecolor()[:3]) for h in legend.legend_handles] == [viz.class_colour(1), viz.class_colour(2)]


def test_masks_take_their_class_colour():
    image, target, _ = two_squares()
    fig = viz.draw_detections(image, target=target)
    overlay = fig.axes[0].images[-1].get_array()
    assert tuple(overlay[10, 10, :3]) == viz.class_colour(1) and tuple(overlay[40, 40, :3]) == viz.class_colour(2)


def test_labels_of_crowded_boxes_do_not_overlap():
    image = torch.full((3, 64, 64), 0.5)
    corners = torch.tensor([[4.0, 20], [6, 21], [8, 22], [5, 30], [30, 20], [31, 21]])
    boxes = torch.cat([corners, corners + 20], dim=1)  # six 20-px boxes, piled up
    prediction = {"boxes": boxes, "labels": torch.tensor([1, 2, 3, 1, 2, 3]), "scores": torch.linspace(0.9, 0.6, 6)}
    fig = viz.draw_detections(image, prediction, class_names=NAMES, score_threshold=0.5)
    viz.figure_png(fig)  # drawn: the labels are placed
    extents = label_extents(fig.axes[0])
    assert len(extents) == 6
    assert not any(a.overlaps(b) for i, a in enumerate(extents) for b in extents[i + 1 :])
    frame = fig.axes[0].get_window_extent()
    assert all(frame.padded(1).contains(e.x0, e.y0) and frame.padded(1).contains(e.x1, e.y1) for e in extents)
    assert fig.axes[0].texts[0].get_text() == "square 0.90"  # the best first: it kept the first place


def test_labels_are_readable_on_their_colour():
    assert viz.text_colour((1.0, 1.0, 0.0)) == "black" and viz.text_colour(viz.class_colour(4)) == "white"


def test_epoch_predictions_have_a_class_legend():
    trace = TrainingTrace.load(TRACE_JSON)
    fig = viz.draw_epoch_predictions(trace, 1, score_threshold=0.1)
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names and names == [n for n in trace.class_names if n in names]
