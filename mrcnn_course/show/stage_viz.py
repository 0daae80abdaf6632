"""Each stage at work, drawn from the live model: the prediction trace (model.trace(image)) with
one panel per stage, its data-flow table, and the static pictures behind the stage explorers
(explorers.py): anchors, NMS, RoI Align against RoI Pool, a mask's threshold.

Shapes:
    H, W     an image's size;  H_l, W_l an FPN level's size;  A anchors per location
    N        boxes;  PH, PW RoI Align's output grid;  M = 28, the mask side

Like viz.py, every function returns a Figure and never calls plt.show(), and draws boxes in the frame
of the image it shows (frame=(H', W') rescales boxes computed on another image: viz.boxes_in_frame).
What RoI Align and RoI Pool read is computed by roi_geometry.py, from the package's own roi_align
machinery.
"""

import textwrap
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from mrcnn_course.model import box_ops, components
from mrcnn_course.model.mask_head import select_class_masks
from mrcnn_course.model.prediction_trace import PredictionTrace
from mrcnn_course.show.roi_geometry import RoIReadings, SamplingGrid, sampling_grid
from mrcnn_course.show.viz import (
    FONT,
    MASK_THRESHOLD,
    batch_to_display,
    boxes_in_frame,
    class_colour,
    class_legend,
    class_name,
    draw_instances,
    instance_colours,
    label_boxes,
    new_figure,
    text_colour,
    to_display,
)

POOLED_LEVELS = (2, 5)  # RoI Align reads P2..P5 (model.FPN_LEVELS); P6 is for the RPN only
DISTINCT_IOU = 0.5  # the trace's RoI Align panel shows proposals that overlap less than this: other objects
OBJECTNESS = matplotlib.colormaps["viridis"]  # proposals are coloured by objectness, 0 purple to 1 yellow


def draw_sampling_grid(ax: Axes, grid: SamplingGrid, spatial_scale: float, colour, point_size: float = 2) -> None:
    """RoI Align's bins and sampling points (a SamplingGrid, in feature cells) drawn in image pixels."""
    x_edges, y_edges = (grid.x_edges / spatial_scale).tolist(), (grid.y_edges / spatial_scale).tolist()
    ax.vlines(x_edges, y_edges[0], y_edges[-1], colors=[colour], lw=0.7)
    ax.hlines(y_edges, x_edges[0], x_edges[-1], colors=[colour], lw=0.7)
    xy = grid.points.reshape(-1, 2) / spatial_scale
    ax.scatter(xy[:, 0], xy[:, 1], s=point_size, color=colour)


def label_tiles(ax: Axes, texts: Sequence[str], colours: Sequence, tile_shape: tuple[int, int], columns: int) -> None:
    """Label each map of a tile() picture with texts[i], on colours[i], inside its top-left corner."""
    h, w = tile_shape
    for i, (text, colour) in enumerate(zip(texts, colours)):
        r, c = divmod(i, columns)
        ax.text(
            c * (w + 1) - 0.5,
            r * (h + 1) - 0.5,
            text,
            fontsize=FONT - 1,
            color=text_colour(colour),
            ha="left",
            va="top",
            bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.85),
        )


def tile(maps: Tensor, columns: int) -> np.ndarray:
    """Tensor[K, h, w] -> one array of K maps in `columns` columns, one NaN (blank) cell between them."""
    k, h, w = maps.shape
    rows = max(1, -(-k // columns))
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i, m in enumerate(maps.detach().cpu().numpy()):
        r, c = divmod(i, columns)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = m
    return out


def draw_trace(
    trace: PredictionTrace,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    level: str = "P4",
    num_proposals: int = 20,
    num_grids: int = 3,
    sampling_ratio: int = 2,
    size: float = 2.8,
) -> Figure:
    """The prediction trace (model.trace(image)), stage by stage, each titled with the trace's shapes.

    1 the input image; 2 an FPN map (`level`, the L2 norm over channels); 3 the top `num_proposals`
    proposals coloured by objectness (yellow high, purple low); 4 RoI Align's bins and sampling
    points on the `num_grids` best proposals (sampling_ratio 2, as the model's box pooler), and
    their pooled features; 5 the detections after NMS with score >= score_threshold; 6 their 28x28
    masks (the detected class's channel) and the masks pasted into the image. Stages 3 and 4 are
    drawn on stage 1's resized, padded batch, the frame they work in; 5 and 6 on the original image.
    """
    if not isinstance(trace, PredictionTrace):
        raise TypeError(
            f"draw_trace draws a PredictionTrace, what model.trace(image) returns, not a "
            f"{type(trace).__name__}; for detections use viz.draw_detections(image, prediction)"
        )
    s1, s2, s3, s4, s5, s6 = trace.stages
    if level not in s2.tensors:
        raise ValueError(f"no FPN level {level!r} in the trace: choose one of {', '.join(s2.tensors)}")
    fig = new_figure(4 * size, 2 * size)
    axes = fig.subplots(2, 4).ravel()
    for ax in axes:
        ax.set_axis_off()
    batch = batch_to_display(s1.tensors["batch"])

    axes[0].imshow(to_display(s1.tensors["image"]))
    axes[0].set_title(f"1 {s1.name}\nimage {s1.inputs['image']} -> batch {s1.outputs['batch']}", fontsize=FONT)

    axes[1].imshow(s2.tensors[level][0].norm(dim=0).cpu().numpy(), cmap="magma")
    axes[1].set_title(f"2 {s2.name}\n{level} {s2.outputs[level]}, L2 norm over channels", fontsize=FONT)

    proposals = boxes_in_frame(s3.tensors["proposals"], batch.shape[:2])  # stages 3 and 4: the batch's frame
    objectness = s3.tensors["objectness"].cpu()
    axes[2].imshow(batch)
    order = draw_proposal_boxes(axes[2], proposals, objectness, num_proposals)
    best = f", best {float(objectness[order[0]]):.2f}" if len(order) else ""
    axes[2].set_title(
        f"3 RPN: proposals {s3.outputs['proposals']}\ntop {len(order)} by objectness{best}",
        fontsize=FONT,
    )

    # Stage 4 on the best proposals of different objects, numbered and coloured by what the box head
    # makes of each: grid and crop match.
    chosen = distinct_proposals(proposals, objectness, num_grids)
    verdict = s5.tensors["class_logits"].cpu()[chosen].argmax(dim=1)  # the class the box head gives each
    colours = [class_colour(int(label)) for label in verdict]
    numbers = [str(n) for n in range(1, len(chosen) + 1)]
    axes[3].imshow(batch)
    box_features = s4.tensors["box_features"]  # (K, C, PH, PW), in the proposals' order
    pooled_size = (box_features.shape[-2], box_features.shape[-1])  # (PH, PW)
    if len(chosen):
        levels = components.map_levels([proposals[chosen]], *POOLED_LEVELS) + POOLED_LEVELS[0]
        for box, k, colour in zip(proposals[chosen], levels.tolist(), colours):
            grid = sampling_grid(box, pooled_size, sampling_ratio, 2.0**-k)
            draw_sampling_grid(axes[3], grid, 2.0**-k, colour)
        label_boxes(axes[3], proposals[chosen], numbers, colours, fontsize=FONT - 1)
        axes[4].imshow(tile(box_features[chosen].norm(dim=1), len(chosen)), cmap="magma")
        names = [f"{n} {class_name(int(label), class_names)}" for n, label in zip(numbers, verdict)]
        label_tiles(axes[4], names, colours, pooled_size, len(chosen))
    axes[3].set_title(f"4 {s4.name}: bins and points\nof {len(chosen)} proposals on different objects", fontsize=FONT)
    axes[4].set_title(
        f"4 box features {s4.outputs['box features']}\nof those {len(chosen)}, L2 norm; the box head's class",
        fontsize=FONT,
    )

    detections = trace.detections
    shown = torch.where(detections["scores"].cpu() >= score_threshold)[0]
    draw_instances(
        axes[5],
        s1.tensors["image"],
        {k: detections[k] for k in ("boxes", "labels", "scores")},
        class_names,
        score_threshold,
    )
    axes[5].set_title(
        f"5 class scores {s5.outputs['class scores']}\nNMS: {len(detections['boxes'])} detections, "
        f"{len(shown)} with score >= {score_threshold}",
        fontsize=FONT,
    )

    labels, scores = detections["labels"].cpu(), detections["scores"].cpu()
    masks = select_class_masks(s6.tensors["mask_logits"].cpu(), [labels])[0][shown, 0]  # (T', M, M)
    if len(masks):
        axes[6].imshow(tile(masks[:4], 2), cmap="gray", vmin=0, vmax=1)
        label_tiles(
            axes[6],
            [f"{class_name(int(labels[i]), class_names)} {float(scores[i]):.2f}" for i in shown[:4]],
            [class_colour(int(labels[i])) for i in shown[:4]],
            (masks.shape[-2], masks.shape[-1]),
            2,
        )
    axes[6].set_title(f"6 {s6.name}: {s6.outputs['mask logits']}\n{min(len(masks), 4)} shown, own class", fontsize=FONT)
    draw_instances(axes[7], s1.tensors["image"], detections, class_names, score_threshold)
    axes[7].set_title(f"6 pasted masks {s6.outputs['masks']}\n> {MASK_THRESHOLD} drawn", fontsize=FONT)
    class_legend(fig, class_names)
    return fig


def distinct_proposals(proposals: Tensor, objectness: Tensor, count: int) -> Tensor:
    """The indices (Tensor[count] or fewer, best first) of the best proposals (Tensor[K, 4], objectness
    Tensor[K]) that overlap one another by IoU <= DISTINCT_IOU: most likely different objects. The
    package's NMS picks them, whatever nms runs in the model."""
    return box_ops.nms(proposals, objectness, DISTINCT_IOU)[:count]


def draw_proposal_boxes(ax: Axes, proposals: Tensor, objectness: Tensor, count: int) -> Tensor:
    """The `count` best proposals (Tensor[K, 4], objectness Tensor[K]) on `ax`, coloured by objectness
    (OBJECTNESS), the best drawn last, on top; returns their indices, best first (Tensor[count])."""
    order = objectness.argsort(descending=True)[:count]
    for i in order.flip(0).tolist():
        x1, y1, x2, y2 = proposals[i].tolist()
        colour = OBJECTNESS(float(objectness[i]))
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2, color=colour))
    return order


def draw_proposals(
    image: Tensor,
    proposals: Tensor,
    objectness: Tensor,
    count: int = 10,
    size: float = 4.5,
    frame: tuple[int, int] | None = None,
) -> Figure:
    """The RPN's `count` best proposals (Tensor[K, 4], objectness Tensor[K]) on `image` (Tensor[3, H, W]),
    coloured and labelled by objectness, with its colour scale. The proposals are in `image`'s pixels,
    or in those of an image of size frame=(H', W') (the model's batch), from which they are rescaled."""
    proposals = boxes_in_frame(proposals, (image.shape[-2], image.shape[-1]), frame)
    objectness = objectness.detach().cpu()
    fig = new_figure(size + 0.6, size)
    ax = fig.add_subplot()
    ax.imshow(to_display(image))
    order = draw_proposal_boxes(ax, proposals, objectness, count)
    scores = objectness[order].tolist()
    label_boxes(ax, proposals[order], [f"{p:.2f}" for p in scores], [OBJECTNESS(p) for p in scores])
    fig.colorbar(ScalarMappable(Normalize(0, 1), OBJECTNESS), ax=ax, shrink=0.7).set_label("objectness", fontsize=FONT)
    ax.set_title(
        f"RPN proposals: the {len(order)} best of {len(proposals)}, by objectness\n(labels: objectness, no class yet)",
        fontsize=FONT + 1,
    )
    ax.set_axis_off()
    return fig


def draw_data_flow(trace: PredictionTrace, width: float = 11) -> Figure:
    """The data-flow table of trace.to_markdown() as a figure: stage, input, what it does, output."""
    rows = [
        [
            f"{s.number} {s.name}",
            textwrap.fill(s.input_text(), 28),
            textwrap.fill(s.description + (f" ({s.note})" if s.note else ""), 46),
            textwrap.fill(s.output_text(), 34),
        ]
        for s in trace.stages
    ]
    lines = [max(cell.count("\n") + 1 for cell in row) for row in rows]
    fig = new_figure(width, 0.4 + 0.22 * (sum(lines) + len(rows) + 1))
    ax = fig.add_subplot()
    ax.set_axis_off()
    table = ax.table(
        cellText=rows,
        colLabels=["stage", "input", "what it does", "output"],
        loc="center",
        cellLoc="left",
        colWidths=[0.2, 0.22, 0.32, 0.26],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(FONT)
    for (row, _), cell in table.get_celld().items():
        cell.set_height((lines[row - 1] if row else 1) / (sum(lines) + 1))
        if row == 0:
            cell.set_text_props(weight="bold")
    return fig


def draw_anchors(
    image: Tensor,
    anchors: Tensor,
    grid_size: tuple[int, int],
    location: tuple[int, int] | None = None,
    size: float = 4.5,
) -> Figure:
    """One FPN level's anchors (Tensor[H_l * W_l * A, 4], location-major as anchor_grid returns them):
    every location's centre as a dot, and the A anchors of `location` (row, column; default the
    middle) drawn whole."""
    rows, cols = grid_size
    per_location = anchors.detach().cpu().view(rows * cols, -1, 4)  # (H_l * W_l, A, 4)
    row, col = location if location is not None else (rows // 2, cols // 2)
    centres = (per_location[:, 0, :2] + per_location[:, 0, 2:]) / 2  # (H_l * W_l, 2): all A share a centre
    fig = new_figure(size, size)
    ax = fig.add_subplot()
    ax.imshow(to_display(image))
    spacing = size * 72 / max(rows, cols)  # points between two locations, roughly
    dot = min(max(spacing * 0.3, 2.0), 5.0)  # diameter in points: visible on P6, apart on P2
    ax.scatter(centres[:, 0], centres[:, 1], s=dot**2, color="white", edgecolors="black", linewidths=0.6, zorder=2)
    chosen = per_location[row * cols + col]
    centre = centres[row * cols + col]
    ax.scatter([centre[0]], [centre[1]], s=(2 * dot) ** 2, color="red", edgecolors="white", linewidths=0.8, zorder=3)
    for (x1, y1, x2, y2), colour in zip(chosen.tolist(), instance_colours(len(chosen))):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.5))
    height, width = image.shape[-2:]
    ax.set_xlim(min(-0.5, float(chosen[:, 0].min())), max(width - 0.5, float(chosen[:, 2].max())))
    ax.set_ylim(max(height - 0.5, float(chosen[:, 3].max())), min(-0.5, float(chosen[:, 1].min())))
    ax.set_title(
        f"{len(anchors)} anchors: {rows}x{cols} locations x {len(chosen)}\n"
        f"those of location ({row}, {col}), red, drawn",
        fontsize=FONT + 1,
    )
    ax.set_axis_off()
    return fig


def draw_nms(
    image: Tensor,
    boxes: Tensor,
    scores: Tensor,
    keep: Tensor,
    iou_threshold: float,
    size: float = 4.5,
    frame: tuple[int, int] | None = None,
) -> Figure:
    """NMS's result on `image` (Tensor[3, H, W]): kept boxes (Tensor[K] indices into boxes Tensor[N, 4])
    solid with their scores, suppressed ones dashed grey. The boxes are in `image`'s pixels, or in those
    of an image of size frame=(H', W') (the model's batch), from which they are rescaled."""
    boxes = boxes_in_frame(boxes, (image.shape[-2], image.shape[-1]), frame)
    fig = new_figure(size, size)
    ax = fig.add_subplot()
    ax.imshow(to_display(image))
    kept = set(keep.tolist())
    suppressed = [i for i in range(len(boxes)) if i not in kept]
    colours = instance_colours(len(kept))  # one class: the kept boxes told apart, suppressed ones grey
    for i, colour in [(i, "0.6") for i in suppressed] + list(zip(keep.tolist(), colours)):
        x1, y1, x2, y2 = boxes[i].tolist()
        solid = i in kept
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                color=colour,
                lw=1.5 if solid else 0.8,
                ls="-" if solid else "--",
            )
        )
    label_boxes(ax, boxes[keep], [f"{float(scores[i]):.2f}" for i in keep.tolist()], colours)
    ax.set_title(f"IoU threshold {iou_threshold:.2f}: {len(kept)} of {len(boxes)} boxes kept", fontsize=FONT + 1)
    ax.set_axis_off()
    return fig


def draw_roi_align(feature: Tensor, readings: RoIReadings, size: float = 3) -> Figure:
    """RoI Align against RoI Pool on one box over a single-channel Tensor[H, W]
    (readings = roi_geometry.compare_roi_align_pool(feature, box, output_size, sampling_ratio)).

    Left to right: the bins, the sampling points (bin (0, 0)'s in red) and the bilinear weight each
    cell gets in bin (0, 0)'s value; RoI Align's output; RoI Pool's rounded, quantized cells per
    bin; RoI Pool's output. The two maps show the box and a cell around it, large enough to read the
    weights. Cell j's value sits at coordinate j (aligned=False).
    """
    feature = feature.detach().cpu().float()
    grid, cells = readings.grid, readings.pool_cells
    fig = new_figure(4 * size, size)
    ax_align, ax_aligned, ax_pool, ax_pooled = fig.subplots(1, 4, width_ratios=(3, 2, 3, 2))
    low, high = float(feature.min()), float(feature.max())
    height, width = feature.shape
    # the window: both readings of the box and one cell around them, inside the map
    x0 = max(min(float(grid.x_edges[0]), float(cells[..., 0].min()) - 0.5) - 1, -0.5)
    x1 = min(max(float(grid.x_edges[-1]), float(cells[..., 2].max()) - 0.5) + 1, width - 0.5)
    y0 = max(min(float(grid.y_edges[0]), float(cells[..., 1].min()) - 0.5) - 1, -0.5)
    y1 = min(max(float(grid.y_edges[-1]), float(cells[..., 3].max()) - 0.5) + 1, height - 0.5)
    for ax in (ax_align, ax_pool):
        ax.imshow(feature.numpy(), cmap="gray", vmin=low, vmax=high)
        ax.set_xlim(x0, x1), ax.set_ylim(y1, y0)
    draw_sampling_grid(ax_align, grid, 1.0, "tab:orange", point_size=8)
    first = grid.points[0, 0]  # (Sy * Sx, 2)
    ax_align.scatter(first[:, 0], first[:, 1], s=18, color="red", zorder=5)  # above the weights
    per_cell: dict[tuple[int, int], float] = {}  # bin (0, 0)'s weight of each cell, over all its points
    for (x, y), w in zip(grid.cells[0, 0].reshape(-1, 2).tolist(), grid.weights[0, 0].reshape(-1).tolist()):
        per_cell[(x, y)] = per_cell.get((x, y), 0.0) + w
    # A cell's size in points (the panel is about 3/10 of the width, less its title's height): "0.25" takes
    # about 2.2 font sizes, so the font follows the cell and neighbouring weights never overprint.
    cell = 72 * min(0.27 * 4 * size / (x1 - x0), 0.8 * size / (y1 - y0))
    fontsize = min(FONT, max(4.0, 0.38 * cell))
    for (x, y), w in per_cell.items():
        if w >= 0.005:  # the weights that show at two decimals
            ax_align.text(
                x,
                y,
                f"{w:.2f}",
                color="red",
                fontsize=fontsize,
                ha="center",
                va="center",
                zorder=4,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.75),
            )
    ph, pw = readings.align_output.shape
    ax_align.set_title(
        f"RoI Align: {ph}x{pw} bins, {grid.points.shape[2]} points each\nbin (0, 0)'s points and cell weights in red",
        fontsize=FONT,
    )
    for (cx0, cy0, cx1, cy1), colour in zip(cells.reshape(-1, 4).tolist(), instance_colours(ph * pw)):
        ax_pool.add_patch(Rectangle((cx0 - 0.5, cy0 - 0.5), cx1 - cx0, cy1 - cy0, fill=False, color=colour, lw=1.5))
    ax_pool.set_title("RoI Pool: rounded box,\nquantized bins (each a max)", fontsize=FONT)
    for ax, values, name in (
        (ax_aligned, readings.align_output, "RoI Align output"),
        (ax_pooled, readings.pool_output, "RoI Pool output"),
    ):
        ax.imshow(values.numpy(), cmap="gray", vmin=low, vmax=high)
        ax.set_title(f"{name}\n{ph}x{pw}", fontsize=FONT)
    for ax in (ax_align, ax_aligned, ax_pool, ax_pooled):
        ax.set_xticks([]), ax.set_yticks([])
    return fig


def draw_mask_threshold(
    image: Tensor, mask_probs: Tensor, pasted: Tensor, threshold: float, size: float = 3.5
) -> Figure:
    """A predicted mask (Tensor[M, M] probabilities) with its `threshold` contour, and the pasted mask
    (Tensor[H, W] probabilities) above the threshold on the image."""
    fig = new_figure(2 * size, size)
    ax_small, ax_image = fig.subplots(1, 2)
    ax_small.imshow(mask_probs.detach().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
    if float(mask_probs.min()) < threshold < float(mask_probs.max()):
        ax_small.contour(mask_probs.detach().cpu().numpy(), levels=[threshold], colors="red", linewidths=1.5)
    ax_small.set_title(f"{mask_probs.shape[0]}x{mask_probs.shape[1]} mask probabilities", fontsize=FONT)
    region = pasted.detach().cpu().numpy() > threshold
    overlay = np.zeros((*region.shape, 4))
    overlay[region] = (1.0, 0.0, 0.0, 0.45)
    ax_image.imshow(to_display(image))
    ax_image.imshow(overlay)
    if region.any() and not region.all():
        ax_image.contour(region.astype(float), levels=[0.5], colors="red", linewidths=1)
    ax_image.set_title(f"pasted, > {threshold:.2f}: {int(region.sum())} pixels", fontsize=FONT)
    for ax in (ax_small, ax_image):
        ax.set_axis_off()
    return fig
