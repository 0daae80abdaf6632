"""Pictures of the model's outputs, drawn from live tensors: images with their boxes, labels and
masks (ground truth and predictions), and a training run's curves and predictions epoch by epoch.
The pictures of each stage at work (the prediction trace, the explorers') are in stage_viz.py.

Shapes:
    H, W     an image's size;  Hp, Wp the padded batch size (stage 1's output)
    T        detections (or ground-truth objects) in an image

Every function returns a matplotlib Figure and never calls plt.show(): they run under the Agg
backend in scripts and tests, and a notebook displays the returned figure once (a NotebookFigure
renders itself as a PNG; pyplot is never involved, so figures are neither shown twice nor leaked).

Boxes are drawn in the frame of the image they are drawn on. The model works on a resized image
(stage 1): boxes from inside it (proposals, NMS candidates) are given with frame=(Hp, Wp), the size
of the image they refer to, and rescaled (boxes_in_frame); boxes given without a frame that reach
well beyond the image are refused, naming the fix, instead of landing beside their objects.

Left out: interactive matplotlib backends (the widgets redraw PNGs instead), keypoints.
"""

import io
from collections.abc import Sequence
from typing import Any, Literal

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Annotation
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox
from torch import Tensor

from mrcnn_course.model.input_image import IMAGENET_MEAN, IMAGENET_STD, resize_boxes
from mrcnn_course.model.mask_head import MASK_THRESHOLD
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, TrainingTrace, figure_text

FONT = 8  # small enough for six panels side by side, large enough to read
FRAME_MARGIN = 0.1  # boxes may reach this share of a side beyond their image (a RoI grown around an object at the edge)
CLASS_GID = "class"  # the gid of the boxes draw_instances draws: class_legend finds them by it


class NotebookFigure(Figure):
    """A Figure that Jupyter displays as a PNG without pyplot (so it is shown once, never leaked), and
    whose box labels are placed when it is drawn, on its final layout (titles, legends and all)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending_labels: list[tuple[Axes, list[Annotation], Tensor]] = []  # (axes, labels, boxes)
        self._placing = False

    def _repr_png_(self) -> bytes:
        return figure_png(self)

    def draw(self, renderer) -> None:
        if self.pending_labels and not self._placing:
            self._placing = True  # draw_without_rendering comes back here
            try:
                self.draw_without_rendering()  # constrained layout runs: the axes take their final size
                for ax, labels, boxes in self.pending_labels:
                    place_labels(ax, labels, boxes)
            finally:
                self._placing = False
        super().draw(renderer)


def new_figure(width: float, height: float) -> NotebookFigure:
    """An empty figure of width x height inches with constrained layout: add axes with fig.subplots()."""
    return NotebookFigure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (for an ipywidgets.Image, or a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def instance_colours(n: int) -> list[tuple[float, float, float]]:
    """n distinct colours, one per series or box of one kind (tab10, repeating after 10)."""
    palette = matplotlib.colormaps["tab10"]
    return [to_rgb(palette(i % palette.N)) for i in range(n)]


# tab10's colours, those that stand out on the scenes' backgrounds first: the course's classes 1-5
# (square, circle, triangle, dog, cat) get orange, green, red, blue, cyan; 0, the background, grey.
CLASS_PALETTE = tuple(
    to_rgb(f"tab:{name}")
    for name in ("gray", "orange", "green", "red", "blue", "cyan", "purple", "olive", "brown", "pink")
)


def class_colour(label: int) -> tuple[float, float, float]:
    """The colour of class `label`, the same in every panel and lesson: ground truth and predictions,
    masks, crops and legends (CLASS_PALETTE by label, repeating after 10)."""
    return CLASS_PALETTE[int(label) % len(CLASS_PALETTE)]


def text_colour(background) -> str:
    """Black or white, whichever reads better on `background` (an RGB colour)."""
    red, green, blue = to_rgb(background)
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.6 else "white"


def to_display(image: Tensor) -> np.ndarray:
    """Tensor[3, H, W] (float in [0, 1], or uint8) -> an H x W x 3 float array for imshow."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(
            f"expected an image Tensor[3, H, W], got {shape}; "
            "convert a PIL image or an H x W x 3 array with images.to_image_tensor first"
        )
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image.permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)


def batch_to_display(batch: Tensor) -> np.ndarray:
    """Stage 1's normalized, padded Tensor[1, 3, Hp, Wp] -> Hp x Wp x 3 in [0, 1] (ImageNet statistics undone)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return to_display(batch[0].detach().cpu() * std + mean)


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """class_names[label], or "class 3" when there are no names (or too few)."""
    return class_names[label] if class_names and 0 <= label < len(class_names) else f"class {label}"


def boxes_in_frame(boxes: Tensor, image_size: tuple[int, int], frame: tuple[int, int] | None = None) -> Tensor:
    """Boxes (Tensor[K, 4], x1 y1 x2 y2) in the pixels of the image they are drawn on, of image_size (H, W).

    frame: the (H', W') of the image the boxes' coordinates refer to, when it is not the drawn image
    (the model works on the scene resized, 128 -> 192 px for the small model); the boxes are rescaled
    from it. Without it the boxes must already be in the drawn image's pixels: boxes that reach further
    than FRAME_MARGIN of a side beyond the image are refused, as they are in another frame (drawn as
    they are, they would land down and to the right of their objects).
    """
    boxes = boxes.detach().cpu().float()
    if frame is not None:
        return resize_boxes(boxes, (frame[0], frame[1]), (image_size[0], image_size[1]))
    height, width = image_size
    if len(boxes):
        reach = boxes.amax(dim=0)  # (4,): the furthest x1, y1, x2, y2
        if float(reach[2]) > width * (1 + FRAME_MARGIN) + 1 or float(reach[3]) > height * (1 + FRAME_MARGIN) + 1:
            raise ValueError(
                f"boxes reach x = {float(reach[2]):.0f}, y = {float(reach[3]):.0f}, beyond this {height}x{width} "
                "image: they are in the pixels of another image (the model's resized batch?). Pass "
                "frame=(H, W) of the image they were computed on, and they are rescaled to this one."
            )
    return boxes


def draw_instances(
    ax: Axes,
    image: Tensor,
    instances: dict[str, Tensor],
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    frame: tuple[int, int] | None = None,
) -> int:
    """Draw `image` with boxes, labels and masks on `ax`, one colour per class (class_colour); returns
    how many instances were drawn. class_legend(fig) then adds the legend of the classes drawn.

    Args:
        image: Tensor[3, H, W]
        instances: boxes Tensor[T, 4] (x1, y1, x2, y2), labels Tensor[T]; optional scores Tensor[T]
            (predictions: only score >= score_threshold are drawn, the score beside the label) and
            masks (ground truth Tensor[T, H, W] 0/1, or predicted probabilities Tensor[T, 1, H, W]).
        frame: (H', W') of the image the boxes refer to, if not `image`'s: they are rescaled to it
            (boxes_in_frame; masks must be in `image`'s pixels)
    """
    shown = to_display(image)
    boxes, labels = instances["boxes"].detach().cpu(), instances["labels"].detach().cpu()
    scores, masks = instances.get("scores"), instances.get("masks")
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(labels) != len(boxes):
        raise ValueError(
            f"expected boxes Tensor[T, 4] and labels Tensor[T], got {tuple(boxes.shape)} and {tuple(labels.shape)}"
        )
    if masks is not None:
        masks = masks.detach().cpu().float().reshape(len(boxes), *masks.shape[-2:])  # (T, H, W)
        if masks.shape[-2:] != shown.shape[:2]:
            raise ValueError(
                f"masks are {tuple(masks.shape[-2:])} but the image is {shown.shape[:2]}: "
                "draw the instances on the image they belong to"
            )
    boxes = boxes_in_frame(boxes, shown.shape[:2], frame)
    keep = torch.ones(len(boxes), dtype=torch.bool) if scores is None else scores.detach().cpu() >= score_threshold
    index = torch.where(keep)[0].tolist()
    if scores is not None:  # the best first: it gets the best place for its label
        index.sort(key=lambda i: -float(scores[i]))
    ax.imshow(shown)
    overlay = np.zeros((*shown.shape[:2], 4))
    texts, colours = [], []
    for i in index:
        colour, name = class_colour(int(labels[i])), class_name(int(labels[i]), class_names)
        x1, y1, x2, y2 = boxes[i].tolist()
        box = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.5, label=name, gid=CLASS_GID)
        ax.add_patch(box)
        texts.append(name + ("" if scores is None else f" {float(scores[i]):.2f}"))
        colours.append(colour)
        if masks is not None:
            region = masks[i].numpy() > MASK_THRESHOLD
            overlay[region] = (*colour, 0.45)
            if region.any() and not region.all():  # the outline tells touching objects of one class apart
                ax.contour(region, levels=[0.5], colors=[colour], linewidths=1)
    ax.imshow(overlay)
    ax.set_axis_off()
    label_boxes(ax, boxes[index], texts, colours)
    return len(index)


def root_figure(ax: Axes) -> Figure:
    """The figure `ax` is drawn in (not a subfigure of it)."""
    figure = ax.get_figure(root=True)
    if figure is None:
        raise ValueError("the axes belong to no figure: make them with fig.subplots()")
    return figure


def label_boxes(ax: Axes, boxes: Tensor, texts: Sequence[str], colours: Sequence, fontsize: float = FONT) -> None:
    """Label each box (Tensor[T, 4], the most important first) with texts[i] on colours[i], at a corner
    where no label overlaps another (place_labels). On a NotebookFigure they are placed when the figure
    is drawn, on its final layout (titles and legends added later included); elsewhere at once."""
    labels = [
        ax.annotate(
            text,
            (0, 0),
            xytext=(0, 0),
            textcoords="offset points",
            fontsize=fontsize,
            color=text_colour(colour),
            clip_on=True,
            bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.9),
        )
        for text, colour in zip(texts, colours)
    ]
    figure = root_figure(ax)
    if isinstance(figure, NotebookFigure):
        figure.pending_labels.append((ax, labels, boxes))
    else:
        figure.draw_without_rendering()
        place_labels(ax, labels, boxes)


def place_labels(ax: Axes, labels: Sequence[Annotation], boxes: Tensor, gap: float = 1.5) -> None:
    """Put each box's label (labels[i] for boxes Tensor[T, 4], the most important first) at the first
    corner of its box where it overlaps no label placed before it and stays inside the picture: above
    the top-left corner, inside it, below the bottom-left, inside it, above the top-right; when every
    corner is taken, lower down the box's left side. A label with no free place beside its box is
    hidden: the box's colour still says its class (class_legend), and a pile of labels says nothing.
    Measured on the figure's layout as it was last drawn (fig.draw_without_rendering() lays it out),
    with `gap` points to spare."""
    if not labels:
        return
    figure = root_figure(ax)
    frame = ax.get_window_extent()
    pad = gap * figure.dpi / 72
    placed: list[Bbox] = []

    def extent(label: Annotation) -> Bbox:
        return label.get_window_extent().padded(pad)

    def free(box: Bbox) -> bool:
        inside = frame.x0 <= box.x0 + pad and box.x1 - pad <= frame.x1 and frame.y0 <= box.y0 + pad
        return inside and box.y1 - pad <= frame.y1 and not any(box.overlaps(other) for other in placed)

    for label, (x1, y1, x2, y2) in zip(labels, boxes.tolist()):
        label.set_visible(True)
        # y grows downwards in an image: "bottom" alignment puts the text above the anchor
        corners: list[tuple[tuple[float, float], Literal["left", "right"], Literal["bottom", "top"]]] = [
            ((x1, y1), "left", "bottom"),
            ((x1, y1), "left", "top"),
            ((x1, y2), "left", "top"),
            ((x1, y2), "left", "bottom"),
            ((x2, y1), "right", "bottom"),
        ]
        label.xyann = (0, 0)
        for xy, ha, va in corners:
            label.xy = xy
            label.set_horizontalalignment(ha)
            label.set_verticalalignment(va)
            if free(extent(label)):
                break
        else:
            label.xy = corners[1][0]  # inside the top-left corner, then lower, along the box's left side
            label.set_horizontalalignment("left")
            label.set_verticalalignment("top")
            step = extent(label).height * 72 / figure.dpi  # points
            height = abs(ax.transData.transform((x1, y2))[1] - ax.transData.transform((x1, y1))[1]) * 72 / figure.dpi
            for k in range(1, int(height / step)):
                label.xyann = (0, -k * step)  # one label height lower each time
                if free(extent(label)):
                    break
            else:
                label.set_visible(False)
                continue
        placed.append(extent(label))


def class_legend(fig: Figure, class_names: Sequence[str] | None = None) -> Legend | None:
    """One legend for the figure, below it: a patch in class_colour per class that draw_instances drew in
    any of its panels, in the order of class_names (else as drawn). None when no class was drawn."""
    colours: dict[str, Any] = {}
    for ax in fig.axes:
        for patch in ax.patches:
            if patch.get_gid() == CLASS_GID:
                colours.setdefault(str(patch.get_label()), patch.get_edgecolor())
    if not colours:
        return None
    order = list(class_names or [])
    names = sorted(colours, key=lambda name: order.index(name) if name in order else len(order))
    handles = [Patch(facecolor=colours[name], edgecolor="none", label=name) for name in names]
    where: Literal["outside lower center", "lower center"] = (
        "outside lower center" if fig.get_layout_engine() is not None else "lower center"  # outside: constrained
    )
    return fig.legend(handles=handles, loc=where, ncols=len(handles), fontsize=FONT, frameon=False)


def draw_detections(
    image: Tensor,
    prediction: dict[str, Tensor] | None = None,
    target: dict[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    size: float = 4,
    frame: tuple[int, int] | None = None,
) -> Figure:
    """The image with its ground truth (target) and/or the model's prediction, side by side. The
    model's eval output is already in the image's pixels; frame=(H', W') rescales a prediction whose
    boxes refer to another image (the target is in `image`'s pixels)."""
    panels = [
        (name, value) for name, value in (("ground truth", target), ("prediction", prediction)) if value is not None
    ]
    if not panels:
        raise ValueError("give a prediction, a target or both: there is nothing to draw")
    fig = new_figure(size * len(panels), size + 0.3)
    for ax, (name, instances) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        boxes_frame = frame if instances is prediction else None  # the target is in the image's pixels
        drawn = draw_instances(ax, image, instances, class_names, score_threshold, boxes_frame)
        rule = f", score >= {score_threshold}" if "scores" in instances else ""
        ax.set_title(f"{name}: {drawn} of {len(instances['boxes'])}{rule}", fontsize=FONT + 1)
    class_legend(fig, class_names)
    return fig


def draw_training_curves(trace: TrainingTrace, epoch: int, size: float = 3.2) -> Figure:
    """A TrainingTrace's curves up to `epoch` (1-based): the loss and its five parts (train solid,
    validation dashed, log scale), and recall, precision (score >= 0.5) and mAP. The axes span the whole run, so the
    picture grows rather than rescales as the epoch moves."""
    records = trace.epochs
    if not 1 <= epoch <= len(records):
        raise ValueError(f"epoch {epoch} is not in the trace: it has epochs 1 to {len(records)}")
    shown = records[:epoch]
    x = [r.epoch for r in shown]
    fig = new_figure(2 * size * 1.5, size)
    losses, metrics = fig.subplots(1, 2)
    colours = dict(zip((TOTAL, *LOSS_PARTS), ["black", *instance_colours(len(LOSS_PARTS))]))
    for part, colour in colours.items():
        label = part.removeprefix("loss_")
        losses.plot(x, [r.train_losses[part] for r in shown], color=colour, marker=".", label=label)
        losses.plot(x, [r.val_losses[part] for r in shown], color=colour, ls="--")
    everything = [v for r in records for d in (r.train_losses, r.val_losses) for v in d.values() if v > 0]
    losses.set_yscale("log")
    losses.set_ylim(min(everything) * 0.8, max(everything) * 1.25)
    losses.set_title(
        f"loss by part (solid train, dashed validation)\nepoch {epoch}: "
        f"train {shown[-1].train_losses[TOTAL]:.3f}, validation {shown[-1].val_losses[TOTAL]:.3f}",
        fontsize=FONT + 1,
    )
    for name in ("recall", "precision", "box_map", "box_map50", "mask_map", "mask_map50"):
        values = [getattr(r, name) for r in shown]  # precision is None in traces saved before it was measured
        metrics.plot(
            x, [float("nan") if v is None else v for v in values], marker=".", label=name.replace("_map", " mAP")
        )
    metrics.set_ylim(0, 1)
    metrics.set_title(
        f"validation: recall, precision (score >= 0.5), mAP\nepoch {epoch}: recall {shown[-1].recall:.2f}, "
        f"precision {figure_text(shown[-1].precision)}, mask mAP@0.5 {shown[-1].mask_map50:.2f}",
        fontsize=FONT + 1,
    )
    for ax in (losses, metrics):
        ax.set_xlim(0.8, max(len(records), 2) + 0.2)
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.axvline(epoch, color="0.7", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=FONT - 1, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside: curves stay visible
    return fig


def draw_epoch_predictions(
    trace: TrainingTrace, epoch: int, count: int = 3, score_threshold: float = 0.5, size: float = 2.6
) -> Figure:
    """The model's predictions on the first `count` fixed validation images of a TrainingTrace after
    `epoch` (1-based), drawn from the trace alone."""
    if not 1 <= epoch <= len(trace.epochs):
        raise ValueError(f"epoch {epoch} is not in the trace: it has epochs 1 to {len(trace.epochs)}")
    count = min(count, len(trace.val_images))
    if count == 0:
        raise ValueError("the trace holds no validation images, so there are no predictions to draw")
    fig = new_figure(size * count, size + 0.5)
    for index, ax in enumerate(fig.subplots(1, count, squeeze=False)[0]):
        found = draw_instances(
            ax, trace.image(index), trace.predictions(epoch, index), trace.class_names, score_threshold
        )
        objects = f", {len(trace.val_targets[index]['labels'])} objects" if trace.val_targets else ""
        ax.set_title(f"image {index}: {found} predicted{objects}\n(score >= {score_threshold})", fontsize=FONT)
    class_legend(fig, trace.class_names)
    return fig
