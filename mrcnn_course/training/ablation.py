"""The ablation lab: the small model trained with one change at a time, as in the Mask R-CNN paper's Table 2.

    for change in CHANGES.values():               # "default" first, then one change each
        with change.applied(model):               # components swapped, switches set; undone on exit
            ...
    result = train_with_change("roi_pool", recipe)   # a new maskrcnn_small, trained and measured
    shipped_results()                              # the table benchmarks/ablation.py wrote, with its recipe

The changes (He et al. 2017, section 3 and Table 2; Ren et al. 2015 for the matching):
    roi_pool         RoI Pool (rounded corners and bins, a max per bin) instead of RoI Align, in both heads
    softmax_masks    one softmax over the classes per mask pixel (background a class) instead of a sigmoid
                     per class; detections read the softmax probability of their class
    no_gt_proposals  the ground-truth boxes are not added to the box head's training proposals
    no_low_quality   the RPN's matcher keeps no low-quality match: an object whose best anchor overlaps it
                     less than 0.7 gets no positive anchor

Each change is undone when its block ends, so one process can train them one after the other. Shapes: K
RoIs, C channels or classes, M the mask side, N images.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrcnn_course.model import components
from mrcnn_course.model.mask_head import mask_targets
from mrcnn_course.model.maskrcnn import MaskRCNN, maskrcnn_small
from mrcnn_course.training import data
from mrcnn_course.training.recipe import Recipe, recipe_scenes

RESULTS = Path(__file__).with_name("pretrained") / "ablation.json"  # written by benchmarks/ablation.py
HELD_OUT = 10_000  # the epoch whose scenes the ablation measures on: neither training nor validation sees them


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Pool (Fast R-CNN) with roi_align's signature: Tensor[N, C, H, W] and K boxes -> Tensor[K, C, PH, PW].

    The box's corners are rounded to whole cells and each bin takes the max of the cells it covers
    (show.roi_geometry.roi_pool_cells draws them); sampling_ratio and aligned have no meaning here and are
    ignored. torchvision's kernel does the work (this is a lab switch, not a lesson's exercise).
    """
    from torchvision.ops import roi_pool as torchvision_roi_pool  # torchvision is optional for the package

    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return torchvision_roi_pool(input, boxes, size, spatial_scale)


def softmax_mask_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    mask_matched_idxs: list[Tensor],
) -> Tensor:
    """The FCN-style mask loss the paper compares with: per pixel, cross-entropy over all C classes.

    Args and return as maskrcnn_loss: mask_logits (Tensor[K, C, M, M]), the positive RoIs, the images' masks
    (N Tensor[G_i, H, W]) and labels, and each RoI's object. A pixel inside the object's projected mask
    (target >= 0.5) is labelled with the object's class, every other pixel background (0): the classes
    compete for each pixel, where the sigmoid loss lets each class decide alone.
    """
    labels, targets = mask_targets(mask_logits.shape[-1], proposals, gt_masks, gt_labels, mask_matched_idxs)
    if targets.numel() == 0:
        return mask_logits.sum() * 0  # the mean of nothing is NaN; keep the graph connected
    pixel_classes = torch.where(targets >= 0.5, labels[:, None, None], torch.zeros_like(labels)[:, None, None])
    return F.cross_entropy(mask_logits, pixel_classes.long())


def _softmax_as_logits(module: nn.Module, inputs: tuple, logits: Tensor) -> Tensor | None:
    """Forward hook on the mask predictor, in eval mode only: logits whose sigmoid is the softmax probability.

    The model turns the detected class's channel into a probability with a sigmoid (select_class_masks); a
    model trained with softmax_mask_loss means softmax(logits)[class] instead, and
    sigmoid(log p - log(1 - p)) = p.
    """
    if module.training:
        return None  # the loss needs the raw logits
    probabilities = logits.softmax(dim=1).clamp(1e-7, 1 - 1e-7)
    return probabilities.log() - (-probabilities).log1p()


@contextmanager
def _swapped(**implementations: Callable) -> Iterator[None]:
    with components.using(**implementations):
        yield


@contextmanager
def _softmax_masks(model: MaskRCNN) -> Iterator[None]:
    hook = model.roi_heads.mask_predictor.register_forward_hook(_softmax_as_logits)
    try:
        with components.using(maskrcnn_loss=softmax_mask_loss):
            yield
    finally:
        hook.remove()


@contextmanager
def _no_low_quality_matches(model: MaskRCNN) -> Iterator[None]:
    matcher = model.rpn.proposal_matcher
    before = matcher.allow_low_quality_matches
    matcher.allow_low_quality_matches = False
    try:
        yield
    finally:
        matcher.allow_low_quality_matches = before


def _without_ground_truth(proposals, targets, matcher, sampler, box_coder, generator=None):
    """select_training_samples with the proposals as the RPN gave them (no ground-truth box added)."""
    from mrcnn_course.model.box_head import select_training_samples

    return select_training_samples(proposals, targets, matcher, sampler, box_coder, generator, add_ground_truth=False)


@dataclass(frozen=True)
class Change:
    """One row of the lab: what changes, and what the paper found when it made that change."""

    name: str
    title: str
    paper: str  # what the Mask R-CNN (or Faster R-CNN) paper reports for it
    apply: Callable[[MaskRCNN], AbstractContextManager]  # the change in force inside the block, undone after

    def applied(self, model: MaskRCNN) -> AbstractContextManager:
        """The change in force on `model` (and on the components every model calls) inside a with block."""
        return self.apply(model)


CHANGES: dict[str, Change] = {
    c.name: c
    for c in (
        Change("default", "the course's model", "the reference row", lambda model: _swapped()),
        Change(
            "roi_pool",
            "RoI Pool instead of RoI Align",
            "Table 2c (R-50-C4): mask AP 26.9 with RoIPool, 30.3 with RoIAlign: about 3 points, and about 5 at AP75",
            lambda model: _swapped(roi_align=roi_pool),
        ),
        Change(
            "softmax_masks",
            "one softmax over the classes instead of a sigmoid per class",
            "Table 2b (R-50-C4): mask AP 24.8 with softmax, 30.3 with per-class sigmoid",
            _softmax_masks,
        ),
        Change(
            "no_gt_proposals",
            "no ground-truth boxes added to the proposals",
            "not in Table 2: Detectron and torchvision add them so the heads see perfect boxes from the first step",
            lambda model: _swapped(select_training_samples=_without_ground_truth),
        ),
        Change(
            "no_low_quality",
            "no low-quality matches in the RPN",
            "Faster R-CNN, section 3.1.2: without them an object may have no positive anchor at all",
            _no_low_quality_matches,
        ),
    )
}


def check_change(name: str) -> Change:
    """The change called `name`, or a ValueError that lists the names."""
    if name not in CHANGES:
        raise ValueError(f"no change named {name!r}: the lab's changes are {', '.join(CHANGES)}")
    return CHANGES[name]


def train_with_change(name: str, recipe: Recipe, held_out_images: int = 100, progress: bool = False) -> dict:
    """Train a new maskrcnn_small by `recipe` with one change in force, then measure it on held-out scenes.

    Returns {"change", "title", "steps", "box_map", "box_map50", "mask_map", "mask_map50", "recall",
    "precision"} (floats rounded to 4 places).
    """
    from mrcnn_course.training import evaluation
    from mrcnn_course.training.loop import train

    change = check_change(name)
    torch.manual_seed(recipe.seed)
    model = maskrcnn_small(num_classes=len(data.CLASSES))
    with change.applied(model):
        run = train(model, recipe, progress=progress)
        result = evaluation.evaluate(run.model, recipe_scenes(recipe, HELD_OUT, held_out_images))
    steps = recipe.epochs * (recipe.images_per_epoch // recipe.batch_size)
    figures = {k: round(float(result[k]), 4) for k in (*evaluation.MAP_NAMES, "recall", "precision")}
    return {"change": name, "title": change.title, "steps": steps, **figures}


def shipped_results() -> dict:
    """The lab's table as benchmarks/ablation.py wrote it: {"command", "recipe", "rows": [...], ...}."""
    if not RESULTS.is_file():
        raise FileNotFoundError(f"{RESULTS} is missing: run `python benchmarks/ablation.py --write` to make it")
    return json.loads(RESULTS.read_text())


def results_table(shipped: dict, guesses: dict[str, float | None] | None = None, column: str = "mask_map50") -> str:
    """The shipped table as markdown: each change's held-out figures, its difference from the default in
    `column`, the learner's guess of that difference, and whether it exceeds what chance alone moves (the
    default trained with two seeds)."""
    guesses = guesses or {}
    rows = shipped["rows"]
    default = next(r for r in rows if r["change"] == "default" and r["seed"] == 0)
    seeds = [r[column] for r in rows if r["change"] == "default"]
    noise = max(seeds) - min(seeds)
    lines = [
        f"| change | seed | box mAP | mask mAP | mask mAP@0.5 | difference in {column} | your guess | beyond chance? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        difference = row[column] - default[column]
        guess = guesses.get(row["change"]) if row["change"] != "default" else None
        verdict = "" if row["change"] == "default" else ("yes" if abs(difference) > 2 * noise else "no")
        lines.append(
            f"| {row['title']} | {row['seed']} | {row['box_map']:.3f} | {row['mask_map']:.3f} "
            f"| {row['mask_map50']:.3f} | {difference:+.3f} | {'' if guess is None else f'{guess:+.3f}'} | {verdict} |"
        )
    default_seeds = ", ".join(str(r["seed"]) for r in rows if r["change"] == "default")
    lines.append(
        f"\nChance alone: the default trained with seeds {default_seeds} "
        f"differs by {noise:.3f} in {column}; a change counts as beyond chance when it moves {column} by more than "
        f"twice that ({2 * noise:.3f})."
    )
    return "\n".join(lines)
