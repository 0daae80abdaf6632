"""Stage explorers for the lessons: move one knob of a stage and see what it does, redrawn at once.

    anchor_explorer(image)                  FPN level, anchor size, aspect ratios -> the level's anchors
    nms_explorer(image, boxes, scores)      IoU threshold -> the boxes NMS keeps
    roi_align_explorer(feature)             a box, output size, sampling ratio -> RoI Align against RoI Pool
    mask_threshold_explorer(trace)          a threshold -> the mask that survives, 28x28 and pasted

Shapes:
    H, W     an image's size;  H_l, W_l an FPN level's size;  A anchors per location
    N        boxes;  T detections;  M = 28, the mask side

Each returns an Explorer (an ipywidgets VBox): the controls, the picture (an ipywidgets.Image
redrawn as a PNG on every change: no flicker, no pyplot), a one-line summary, and in
explorer.result the numbers behind the picture. Where no kernel runs (an executed copy, nbgrader's
feedback HTML) the picture and summary it showed stay as a static PNG and text. The pictures are
stage_viz's, so a lesson can draw a static one. The function an explorer runs is an argument (nms=..., roi_align=...,
cell_anchors=..., anchor_grid=...): pass your own to see it at work; by default the active component
runs, so no lesson needs a global components.use() and a reset() cells later.
"""

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mrcnn_course.model import components
from mrcnn_course.model.mask_head import select_class_masks
from mrcnn_course.model.prediction_trace import PredictionTrace
from mrcnn_course.show import stage_viz
from mrcnn_course.show.roi_geometry import compare_roi_align_pool
from mrcnn_course.show.static_picture import StaticPicture, plain_text
from mrcnn_course.show.viz import figure_png

SIZE_DIVISIBLE = 32  # stage 1 pads the batch to a multiple of 32, which fixes each level's grid
RATIO_CHOICES = (0.25, 0.5, 1.0, 2.0, 4.0)  # height / width; R-50-FPN uses 0.5, 1, 2
SEVERAL_RATIOS = "Ctrl-click (Cmd-click on a Mac) to choose several ratios, Shift-click for a range"


@dataclass
class View:
    """What an explorer shows for one setting of its controls."""

    figure: Figure
    summary: str
    result: dict = field(default_factory=dict)


class Explorer(StaticPicture, widgets.VBox):
    """Controls (and a hint on how to use them, if any), then a one-line summary, then the picture; any
    change of a control redraws. Displayed, it also leaves its picture and summary as a static PNG and
    text, for where no kernel runs (static_picture.py).

    update(**control values) -> View. A ValueError from it (a setting that makes no sense) is shown
    in the summary and the last picture stays.
    """

    def __init__(self, controls: dict[str, widgets.ValueWidget], update: Callable[..., View], hint: str = ""):
        self.controls = controls
        self.picture = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))  # unstretched
        self.summary = widgets.HTML()
        self.hint = widgets.HTML(f"<i>{html.escape(hint)}</i>")
        self.result: dict = {}
        self._update = update
        super().__init__(
            [
                widgets.HBox(
                    [*controls.values(), *([self.hint] if hint else [])], layout=widgets.Layout(flex_flow="row wrap")
                ),
                self.summary,
                self.picture,
            ]
        )
        for control in controls.values():
            control.style.description_width = "initial"  # the whole label: ipywidgets cuts it at 90 px
            if hasattr(control, "continuous_update"):
                control.continuous_update = False  # redraw when a slider is let go, not at every pixel of a drag
            control.observe(self.redraw, names="value")
        self.redraw()

    def static_pictures(self) -> list[bytes]:
        return [self.picture.value]

    def static_text(self) -> str:
        return plain_text(self.summary.value)

    def redraw(self, change: dict | None = None) -> None:
        try:
            view = self._update(**{name: control.value for name, control in self.controls.items()})
        except ValueError as error:
            self.summary.value = f"<b style='color:#b00'>{html.escape(str(error))}</b>"
            return
        self.picture.value = figure_png(view.figure)
        self.summary.value = view.summary
        self.result = view.result


def level_anchors(
    image_size: tuple[int, int],
    sizes: tuple[float, ...],
    aspect_ratios: tuple[float, ...],
    level: int,
    cell_anchors: Callable | None = None,
    anchor_grid: Callable | None = None,
) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
    """The anchors of FPN level `level` (2 for P2 ... 6 for P6) for an image of image_size (H, W).

    The grid and stride follow the model: the batch is padded to a multiple of 32, level l's map has
    ceil(padded / 2**l) cells a side (P6 pools P5 with stride 2, rounding up), and the stride is
    padded // cells, as AnchorGenerator computes it.
    cell_anchors, anchor_grid: the functions to use (default: the active components).
    Returns: anchors Tensor[H_l * W_l * A, 4] (anchor_grid of cell_anchors), the grid (H_l, W_l) and
    the stride (y, x).
    """
    cell_anchors = cell_anchors or components.cell_anchors
    anchor_grid = anchor_grid or components.anchor_grid
    if not 2 <= level <= 6:
        raise ValueError(f"level {level} is not an FPN level: the model has P2 to P6 (level 2 to 6)")
    if not sizes or not aspect_ratios:
        raise ValueError("choose at least one anchor size and one aspect ratio")
    padded = [math.ceil(side / SIZE_DIVISIBLE) * SIZE_DIVISIBLE for side in image_size]
    grid = tuple(math.ceil(side / 2**level) for side in padded)
    stride = tuple(side // cells for side, cells in zip(padded, grid))
    anchors = anchor_grid(cell_anchors(tuple(sizes), tuple(aspect_ratios)), grid, stride)
    return anchors, grid, stride


def anchor_explorer(
    image: Tensor,
    level: int = 4,
    size: int = 32,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    cell_anchors: Callable | None = None,
    anchor_grid: Callable | None = None,
) -> Explorer:
    """Anchors of one FPN level over `image` (Tensor[3, H, W]), made by cell_anchors and anchor_grid
    (yours, or the active components by default). The small model's size at level l is 8 * 2**(l - 2)
    (SmallConfig.anchor_sizes); R-50-FPN's is 32 * 2**(l - 2)."""
    controls = {
        "level": widgets.IntSlider(value=level, min=2, max=6, description="FPN level P"),
        "size": widgets.IntSlider(value=size, min=4, max=256, step=4, description="size (px)"),
        "aspect_ratios": widgets.SelectMultiple(
            options=RATIO_CHOICES, value=tuple(aspect_ratios), rows=len(RATIO_CHOICES), description="ratios h / w"
        ),
    }

    def update(level: int, size: int, aspect_ratios: tuple[float, ...]) -> View:
        anchors, grid, stride = level_anchors(
            (image.shape[-2], image.shape[-1]), (size,), aspect_ratios, level, cell_anchors, anchor_grid
        )
        summary = (
            f"P{level}: {grid[0]}x{grid[1]} locations, stride {stride[0]} px, {len(aspect_ratios)} anchors each: "
            f"{len(anchors)} anchors"
        )
        return View(
            stage_viz.draw_anchors(image, anchors, grid), summary, {"anchors": anchors, "grid": grid, "stride": stride}
        )

    return Explorer(controls, update, hint=SEVERAL_RATIOS)


def nms_explorer(
    image: Tensor,
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.5,
    nms: Callable | None = None,
    frame: tuple[int, int] | None = None,
) -> Explorer:
    """`nms` (yours, or the active components.nms by default) over boxes (Tensor[N, 4]) with scores
    (Tensor[N]) on `image`, at a chosen IoU threshold; explorer.result["keep"] holds the kept indices.
    frame=(H', W'): the boxes are in the pixels of an image of that size (the model's batch) and are
    drawn rescaled to `image`'s (NMS runs on them as given)."""
    nms = nms or components.nms
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"expected boxes Tensor[N, 4] and scores Tensor[N], got {tuple(boxes.shape)} and {tuple(scores.shape)}"
        )
    controls = {
        "iou_threshold": widgets.FloatSlider(
            value=iou_threshold, min=0.0, max=1.0, step=0.05, description="IoU threshold"
        )
    }

    def update(iou_threshold: float) -> View:
        keep = nms(boxes, scores, iou_threshold)
        summary = (
            f"NMS keeps {len(keep)} of {len(boxes)} boxes: a box goes if it overlaps a better kept box by "
            f"IoU > {iou_threshold:.2f}"
        )
        return View(stage_viz.draw_nms(image, boxes, scores, keep, iou_threshold, frame=frame), summary, {"keep": keep})

    return Explorer(controls, update)


def demo_feature(height: int = 8, width: int = 10, seed: int = 0) -> Tensor:
    """A small single-channel map, Tensor[H, W], with values that differ cell to cell."""
    return torch.rand(height, width, generator=torch.Generator().manual_seed(seed))


def roi_align_explorer(
    feature: Tensor | None = None,
    box: tuple[float, float, float, float] = (1.3, 1.6, 6.8, 5.4),
    output_size: int = 2,
    sampling_ratio: int = 2,
    roi_align: Callable | None = None,
) -> Explorer:
    """One box over a single-channel map (Tensor[H, W]; demo_feature() by default), coordinates in
    its cells: RoI Align's sampling points and bilinear weights (`roi_align`: yours, or the active
    components.roi_align by default) beside RoI Pool's quantized cells. explorer.result is the RoIReadings."""
    feature = demo_feature() if feature is None else feature
    height, width = feature.shape[-2:]
    corners = zip(("x1", "y1", "x2", "y2"), box, (width - 1, height - 1) * 2)
    controls = {
        **{  # on the slider's 0.1 steps: a box from a tensor has float32 noise (3.299999952316284)
            name: widgets.FloatSlider(value=round(value, 1), min=0.0, max=float(top), step=0.1, description=name)
            for name, value, top in corners
        },
        "output_size": widgets.IntSlider(value=output_size, min=1, max=7, description="bins a side"),
        "sampling_ratio": widgets.IntSlider(value=sampling_ratio, min=1, max=4, description="points a side"),
    }

    def update(x1: float, y1: float, x2: float, y2: float, output_size: int, sampling_ratio: int) -> View:
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"the box ({x1}, {y1}, {x2}, {y2}) is empty: x2 must exceed x1 and y2 exceed y1")
        readings = compare_roi_align_pool(
            feature, torch.tensor([x1, y1, x2, y2]), (output_size, output_size), sampling_ratio, roi_align
        )
        summary = (
            f"bin (0, 0): RoI Align {float(readings.align_output[0, 0]):.3f} (average of "
            f"{sampling_ratio * sampling_ratio} interpolated points), RoI Pool {float(readings.pool_output[0, 0]):.3f} "
            "(max of whole cells)"
        )
        return View(stage_viz.draw_roi_align(feature, readings), summary, {"readings": readings})

    return Explorer(controls, update)


def detection_mask(trace: PredictionTrace, index: int) -> tuple[Tensor, Tensor]:
    """Detection `index` of a PredictionTrace: its 28x28 mask probabilities (Tensor[M, M], the
    detected class's channel) and its pasted probabilities (Tensor[H, W])."""
    detections = trace.detections
    if not 0 <= index < len(detections["boxes"]):
        raise ValueError(
            f"the trace has {len(detections['boxes'])} detections, so no detection {index}: "
            "use a trained model (load_pretrained_small()) or a lower box_score_thresh"
        )
    small = select_class_masks(
        trace[6].tensors["mask_logits"][index : index + 1], [detections["labels"][index : index + 1]]
    )
    return small[0][0, 0], detections["masks"][index, 0]


def mask_threshold_explorer(trace: PredictionTrace, index: int = 0, threshold: float = 0.5) -> Explorer:
    """A threshold slider over detection `index`'s predicted mask (from model.trace(image)): the 28x28
    probabilities with the threshold's contour, and the pasted mask above it on the image.
    explorer.result["pixels"] counts the pasted pixels above the threshold."""
    small, pasted = detection_mask(trace, index)
    image = trace[1].tensors["image"]
    controls = {
        "threshold": widgets.FloatSlider(value=threshold, min=0.05, max=0.95, step=0.05, description="threshold")
    }

    def update(threshold: float) -> View:
        pixels = int((pasted > threshold).sum())
        summary = f"{pixels} pixels have mask probability > {threshold:.2f} (torchvision returns the probabilities)"
        return View(stage_viz.draw_mask_threshold(image, small, pasted, threshold), summary, {"pixels": pixels})

    return Explorer(controls, update)
