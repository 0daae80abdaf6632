"""Hints on demand: the steps of each exercise, out of sight until the learner asks (issue 15).

An exercise's docstring states its contract (what goes in, what comes out, the rules and traps), so a
learner can try it as a problem first; the steps are here:

    grading.hint("nms")       # every step
    grading.hint("nms", 2)    # the first two only

The steps say what to compute and which torch functions help, not the code: a learner who follows
them still writes each line (tests/test_grading_hints.py checks that no step copies a solution line).
"""

import textwrap

STEPS: dict[str, tuple[str, ...]] = {
    "resize_boxes": (
        "Work out two ratios: the new height over the old one, the new width over the old one.",
        "Take the four columns of the boxes apart (Tensor.unbind along dim 1).",
        "Scale the two x columns with the width ratio and the two y columns with the height ratio.",
        "Put the four columns back together in their order (torch.stack along dim 1); with no boxes this "
        "still gives Tensor[0, 4].",
    ),
    "resize": (
        "From the image's height and width, compute the scale with the min/max-size rule.",
        "Resize the image with F.interpolate: it wants a batch, so add a leading axis and take it away "
        "afterwards; bilinear, align_corners=False, recompute_scale_factor=True.",
        "With no target you are done: return the image and None.",
        "Make a shallow copy of the target dict, so the caller's stays as it was.",
        "Masks, if any: resize them by the same scale as one-channel floats (the default mode, nearest, "
        "and recompute_scale_factor=True), then drop the channel and go back to uint8.",
        "Boxes, if any: components.resize_boxes from the old (H, W) to the resized image's size.",
    ),
    "batch_images": (
        "Find the largest height and the largest width over the images.",
        "Round each up to the next multiple of size_divisible (math.ceil of the quotient).",
        "Make an all-zero batch of shape (N, 3, Hp, Wp) with Tensor.new_zeros on the first image: it "
        "keeps the images' dtype and device.",
        "Copy each image into the top-left corner of its slot, slicing with its own height and width.",
    ),
    "bottleneck": (
        "Run x through the first 1x1 convolution and its batch norm, then a ReLU (F.relu).",
        "The same with the 3x3 convolution (it carries the stride) and its batch norm, then a ReLU.",
        "Then the last 1x1 convolution and its batch norm, with no ReLU yet.",
        "Choose the shortcut: x itself, unless the block has a downsample module, which maps x to the branch's shape.",
        "Add the branch and the shortcut, and only then apply the last ReLU.",
    ),
    "fpn_top_down": (
        "Start at the coarsest level: its lateral 1x1 convolution gives the running sum, and the 3x3 "
        "convolution of that sum is the coarsest P.",
        "Walk to the finer levels one by one, from the second coarsest down to the finest.",
        "At each level: the lateral of its C, plus the running sum upsampled (nearest) to exactly the "
        "lateral's height and width (F.interpolate with size=): that is the new running sum.",
        "That level's P is its 3x3 convolution of the running sum; keep the list finest first (insert at the front).",
        "Finally append P6: the coarsest P pooled with kernel 1 and stride 2.",
    ),
    "cell_anchors": (
        "Turn the sizes and the ratios into float32 tensors.",
        "From each ratio, the factor for the height (its square root) and for the width (one over it).",
        "Every (ratio, size) pair at once: a column of factors times a row of sizes (broadcasting), "
        "flattened so that the ratio changes slowest.",
        "From the widths and heights, the four corners of a box centred on the origin, one row per anchor.",
        "Round.",
    ),
    "anchor_grid": (
        "The x of every column and the y of every row: torch.arange of the grid's size, times the stride.",
        "Every (y, x) location with torch.meshgrid (indexing='ij'), both flattened: row by row.",
        "One shift per location, (x, y, x, y): a Tensor[H * W, 4].",
        "Every cell anchor on every location: add a (locations, 1, 4) view of the shifts to a (1, A, 4) view "
        "of the cell anchors, then flatten to rows of 4.",
    ),
    "encode_boxes": (
        "The proposals' widths and heights (no + 1) and their centres.",
        "The same for the reference boxes.",
        "Each of the four formulas of the docstring is one line of tensor arithmetic (torch.log for the sizes).",
        "Stack the four results as the columns of the answer.",
    ),
    "decode_boxes": (
        "The boxes' widths, heights and centres, each kept as a column (N, 1) so that it broadcasts over "
        "the C classes.",
        "dx, dy, dw, dh of every class: every 4th column of deltas, starting at 0, 1, 2 and 3 (N, C each), "
        "each divided by its weight.",
        "Limit dw and dh from above only (Tensor.clamp with max).",
        "New centres: move each centre by d times the size; new sizes: the size times exp(d).",
        "The four corners from the new centres and sizes, stacked on a new last axis: (N, C, 4).",
    ),
    "box_iou": (
        "The overlap of every pair at once: index boxes1 with [:, None] and boxes2 with [None, :]. Its "
        "top-left is the larger of the two top-lefts, its bottom-right the smaller of the two "
        "bottom-rights (torch.max and torch.min of two tensors): (N, M, 2) each.",
        "Its width and height: bottom-right minus top-left, never below 0.",
        "Its area, and the area of each box of either list.",
        "The intersection over the union, with the areas broadcast the same way as the corners.",
    ),
    "nms": (
        "Sort: the indices by decreasing score (Tensor.argsort), and the boxes in that order.",
        "Work through the sorted boxes in blocks of a fixed size (128 is good): a block's IoU matrix stays "
        "small whatever the number of boxes.",
        "In a block: a boolean matrix saying which better box would suppress which worse one: IoU above the "
        "threshold (components.box_iou), upper triangle only (a box can only suppress the boxes after it).",
        "Settle the block (Cluster-NMS, Zheng et al. 2020): start with every box kept; a box stays kept when "
        "no KEPT box before it suppresses it; recompute until nothing changes, so that a suppressed box "
        "suppresses nothing. Each pass is one tensor operation over the matrix.",
        "Record the original indices of the block's kept boxes; drop the block, and every later box that one "
        "of them suppresses (one IoU of the kept boxes against all the rest).",
        "Concatenate the recorded indices, int64 (also when there are none).",
    ),
    "filter_proposals": (
        "Give objectness the shape (N, R), and make a tensor that says which level each of the R anchors "
        "is on (torch.full per level, concatenated).",
        "Split the logits level by level (Tensor.split); in each, the indices of its best logits "
        "(Tensor.topk, at most the level's size), shifted by where the level starts in R; join them.",
        "For each image: its chosen boxes, logits and levels; probabilities from the logits; the boxes "
        "clipped to the image (components.clip_boxes_to_image).",
        "Keep the indices that components.remove_small_boxes returns, and of those the ones whose score "
        "is at least score_thresh.",
        "components.batched_nms with the levels as its groups; the first post_nms_top_n of its answer.",
    ),
    "interpolation_weights": (
        "Remember which coordinates lie outside [-1, length]: they will weigh nothing.",
        "Bring the coordinates into [0, length - 1]: one clamp gives both border rules.",
        "The low neighbour is the floor, as an integer tensor; the high one is the next cell, but never past the last.",
        "t: how far each coordinate is past its low neighbour.",
        "Rows of weights from F.one_hot of each neighbour, scaled by its weight (give the weights a "
        "trailing axis so they broadcast); then zero the rows of the coordinates of step 1.",
    ),
    "roi_align": (
        "PH and PW from output_size; the zero output Tensor[K, C, PH, PW]; with no boxes, return it.",
        "The corners in cells (scaled, and shifted if aligned); each box's width and height (clamped "
        "unless aligned) and the size of one of its bins.",
        "The number of points per bin along each axis: one number per box.",
        "A helper for one axis: every box's bin weights, Tensor[K, bins, length]. Compute the coordinates "
        "of all points of all bins at once (broadcast a box axis, a bin axis and a point axis), take their "
        "interpolation_weights, and average over each bin's points. Boxes may have different numbers of "
        "points: make room for the most and weigh the extra ones 0.",
        "The helper gives the rows (along H) and the columns (along W).",
        "Output = rows @ feature map @ columns transposed, per box, but only a few weights of a bin are not 0: "
        "keep the largest few rows and columns (topk), number every (row, column) cell of every bin in the map "
        "laid out channels last, one row per cell, weigh it by row weight times column weight, and let "
        "F.embedding_bag sum each bin's cells in one pass; reshape to (K, C, PH, PW).",
    ),
    "map_levels": (
        "Join every image's boxes into one tensor.",
        "Each box's scale: the side of the square of the same area.",
        "Apply the formula of the docstring (torch.log2, torch.floor).",
        "Clamp, make it int64, and subtract k_min.",
    ),
    "fastrcnn_loss": (
        "Concatenate the labels and the regression targets of all images.",
        "The cross-entropy of the class logits against the labels.",
        "Find the positive RoIs (torch.where).",
        "View the deltas as (K, C, 4) and pick, for each positive RoI, the 4 deltas of its own class "
        "(index with two index tensors at once).",
        "Smooth L1 against those RoIs' targets, beta 1/9, reduction 'sum', divided by K.",
    ),
    "postprocess_detections": (
        "Probabilities from the logits; every box of every class decoded at once (components.decode_boxes).",
        "Split the scores and boxes back into images (each image's number of proposals).",
        "For each image: clip its boxes; a labels tensor shaped like its scores, each column its class "
        "index; drop the background column of boxes, scores and labels, and flatten all three.",
        "Keep the candidates above the threshold, then those components.remove_small_boxes keeps.",
        "components.batched_nms with the labels as its groups, cut at detections_per_img.",
    ),
    "project_masks_on_boxes": (
        "RoI Align's boxes, Tensor[K, 5]: in front of each box, the index of its matched object (it picks "
        "the 'image', here the mask, the box reads), in the boxes' dtype.",
        "Give the masks a channel axis and make them float.",
        "components.roi_align with an (M, M) output, scale 1, sampling ratio -1, not aligned.",
        "Drop the channel axis.",
    ),
    "maskrcnn_loss": (
        "Each RoI's class: index each image's labels with its matched indices; concatenate.",
        "Each image's targets from components.project_masks_on_boxes (M is the logits' last size); concatenate.",
        "With no targets, return a zero that keeps the graph.",
        "For each RoI, the logits of its own class: index the first two axes with torch.arange(K) and the classes.",
        "F.binary_cross_entropy_with_logits against the targets.",
    ),
    "paste_masks_in_image": (
        "Pad the masks (F.pad) and work out the growth factor.",
        "Grow every box: the same centre, half-width and half-height times the factor; integer corners.",
        "Start from an all-zero output.",
        "For each mask: its box's width and height in whole pixels, counting the last one; resize the "
        "mask to that size (F.interpolate).",
        "Intersect the box with the image; if anything is left, copy the matching part of the resized "
        "mask there (offset by the box's corner).",
    ),
    "train_step": (
        "Ask the model for its losses on the batch.",
        "Add them up.",
        "Clear the gradients, backpropagate the sum, and let the optimizer take its step.",
        "The record: the total and each loss by name, each as a Python number (Tensor.item).",
    ),
}


def hint(name: str, steps: int | None = None) -> None:
    """Print the numbered steps of exercise `name` (all, or the first `steps`)."""
    if name not in STEPS:
        raise ValueError(f"no exercise named {name!r}; the exercises: {', '.join(STEPS)}")
    shown = STEPS[name][:steps]
    print(f"{name}, step by step ({len(shown)} of {len(STEPS[name])}):")
    for number, step in enumerate(shown, 1):
        print(textwrap.fill(step, 100, initial_indent=f"  {number}. ", subsequent_indent="     "))
