"""The exercises of lesson 07: average_precision (07a, how detection is measured) and the capstone's training
step, train_step (07b).

Neither is a component: the model never calls them. average_precision's reference is
evaluation.average_precision (itself tested equal to pycocotools' COCOeval); a case gives per image the
detections' scores and their IoUs with the objects of one class, and compares the AP, a number, within a
tolerance whether the learner returns a float or a tensor.

train_step's reference is training_step.train_step, and a case compares what a step leaves behind, not
only what it returns: the losses it reports and the model's weights after the step. Both steps start from
copies of the same tiny model and optimizer, and draw the same random anchors and RoIs (the same seed).
"""

# This stage's exercises, in the lesson's order: each is declared once, below, by the `exercise` decorator on
# its check function (core.exercise), and grading/__init__.py exports them.
__all__ = ["check_average_precision", "check_train_step"]

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mrcnn_course.model.backbone import BackboneWithFPN, BasicBlock, ResNetConfig
from mrcnn_course.model.maskrcnn import MaskRCNN, SmallConfig
from mrcnn_course.teaching.grading.core import exercise
from mrcnn_course.teaching.grading.exercise import Case, Mistake
from mrcnn_course.training import (  # training_step.train_step, the step train() takes, is the reference
    data,
    evaluation,
    training_step,
)
from mrcnn_course.training.training_trace import TOTAL

# ----- average_precision (lesson 07a) -----

Image = tuple[list[float], list[list[float]], int]  # one image: scores [T], IoU rows [T][G], and G


def _ap_case(name: str, images: list[Image], iou_threshold: float = 0.5, extra: bool = False) -> Case:
    """A case from plain numbers, per image: (scores, IoU rows, number of objects)."""
    scores = [torch.tensor(s, dtype=torch.float64) for s, _, _ in images]
    ious = [torch.tensor(rows, dtype=torch.float64).reshape(len(s), g) for s, rows, g in images]
    notes = {
        "scores": "; ".join(f"image {i}: {s}" for i, (s, _, _) in enumerate(images)),
        "ious": "; ".join(
            f"image {i} ({g} objects): {rows or 'no detections'}" for i, (_, rows, g) in enumerate(images)
        ),
    }
    return Case(name, (scores, ious, iou_threshold), notes=notes, extra=extra)


def _random_images(count: int, most_detections: int, most_objects: int) -> list[Image]:
    """Random detections and objects (build_cases seeds torch), scores in fifths so that some tie."""
    images: list[Image] = []
    for _ in range(count):
        detections = int(torch.randint(0, most_detections + 1, ()))
        objects = int(torch.randint(0, most_objects + 1, ()))
        # a row's IoUs differ (among equal ones COCOeval takes the last object: a rule no visible case states)
        hundredths = [torch.randperm(100)[:objects].tolist() for _ in range(detections)]
        overlaps = (torch.rand(detections, objects) < 0.4).tolist()  # mostly no overlap
        ious = [[h / 100 if o else 0.0 for h, o in zip(row, kept)] for row, kept in zip(hundredths, overlaps)]
        scores = [int(fifths) / 5 for fifths in torch.randint(1, 6, (detections,))]
        images.append((scores, ious, objects))
    return images


def _ap_cases() -> list[Case]:
    return [
        _ap_case(
            "one image, detections not in score order", [([0.3, 0.9, 0.6], [[0.0, 0.1], [0.8, 0.0], [0.0, 0.7]], 2)]
        ),
        _ap_case("two detections of one object", [([0.9, 0.8, 0.7], [[0.9, 0.0], [0.7, 0.0], [0.0, 0.6]], 2)]),
        _ap_case("a detection overlapping two objects", [([0.9, 0.8], [[0.6, 0.8], [0.7, 0.0]], 2)]),
        _ap_case("IoU equal to the threshold", [([0.9], [[0.5]], 1)]),
        _ap_case(
            "precision rises again after two misses",
            [([0.9, 0.8, 0.7, 0.6, 0.5], [[0.9, 0, 0], [0, 0, 0.1], [0.2, 0, 0], [0, 0.8, 0], [0, 0, 0.9]], 3)],
        ),
        _ap_case("half of the objects never found", [([0.9, 0.8], [[0.9, 0, 0, 0], [0, 0.7, 0, 0]], 4)]),
        _ap_case("two images, ranked together", [([0.9, 0.4], [[0.8], [0.0]], 1), ([0.95, 0.6], [[0.1], [0.7]], 1)]),
        _ap_case("no detections", [([], [], 2)]),
        _ap_case("no objects in any image", [([0.9], [[]], 0), ([], [], 0)]),
        _ap_case("equal scores keep their order", [([0.8, 0.8, 0.7], [[0.0, 0.0], [0.9, 0.0], [0.0, 0.8]], 2)]),
        # hidden: the same rules with other values
        _ap_case(
            "five detections out of order, IoU threshold 0.75",
            [([0.2, 0.7, 0.9, 0.4, 0.8], [[0.8, 0, 0], [0.9, 0, 0], [0, 0.3, 0], [0, 0.95, 0], [0, 0, 0.76]], 3)],
            0.75,
            extra=True,
        ),
        _ap_case(
            "duplicates in two images",
            [([0.9, 0.85], [[0.6], [0.9]], 1), ([0.7, 0.65, 0.3], [[0.8, 0], [0.75, 0], [0, 0.5]], 2)],
            extra=True,
        ),
        _ap_case(
            "a detection overlapping three objects",
            [([0.95, 0.9, 0.5], [[0.55, 0.9, 0.6], [0.0, 0.8, 0.0], [0.7, 0.0, 0.0]], 3)],
            extra=True,
        ),
        _ap_case("IoU equal to the threshold 0.75", [([0.6, 0.4], [[0.75, 0.0], [0.0, 0.74]], 2)], 0.75, extra=True),
        _ap_case(
            "precision rises again after one miss",
            [([0.9, 0.85, 0.6, 0.55], [[0, 0.7], [0.8, 0], [0, 0.2], [0, 0.9]], 2), ([0.5], [[0.6]], 1)],
            extra=True,
        ),
        _ap_case("a third of the objects found", [([0.7, 0.6], [[0, 0, 0.8], [0, 0, 0.9]], 3)], extra=True),
        _ap_case(
            "three images, ranked together",
            [([0.3, 0.9], [[0.9], [0.0]], 1), ([0.8], [[0.0]], 1), ([0.6, 0.5], [[0.7, 0.0], [0.0, 0.9]], 2)],
            extra=True,
        ),
        _ap_case("no detections in three images", [([], [], 1), ([], [], 0), ([], [], 2)], extra=True),
        _ap_case("no objects, two detections", [([0.9, 0.1], [[], []], 0)], extra=True),
        _ap_case(
            "equal scores across two images",
            [([0.5, 0.9], [[0.0], [0.0]], 1), ([0.5, 0.5], [[0.8], [0.0]], 1)],
            extra=True,
        ),
        _ap_case("four random images", _random_images(4, 8, 3), extra=True),
    ]


def _numbered(scores: list[Tensor], order: Tensor) -> list[Tensor]:
    """New scores, per image, that rank all detections in `order` (indices into the images' concatenation)."""
    rank = torch.empty(len(order), dtype=torch.float64)
    rank[order] = torch.arange(len(order), 0, -1, dtype=torch.float64)
    return list(rank.split([len(s) for s in scores]))


def _input_order(scores, ious, iou_threshold):
    every = torch.cat([torch.zeros(0, dtype=torch.float64), *scores])
    return evaluation.average_precision(_numbered(scores, torch.arange(len(every))), ious, iou_threshold)


def _ties_reversed(scores, ious, iou_threshold):
    every = torch.cat([torch.zeros(0, dtype=torch.float64), *scores])
    flipped = every.argsort(stable=True).flip(0)  # ascending, then reversed: equal scores come out backwards
    return evaluation.average_precision(_numbered(scores, flipped), ious, iou_threshold)


def _first_object(scores, ious, iou_threshold):
    # IoUs above the threshold made to decrease with the object's index: the best is then the first
    first = [torch.where(i >= iou_threshold, 1 - 1e-6 * torch.arange(i.shape[1]), i) for i in ious]
    return evaluation.average_precision(scores, first, iou_threshold)


def _strictly_above(scores, ious, iou_threshold):
    return evaluation.average_precision(scores, [i.masked_fill(i == iou_threshold, 0) for i in ious], iou_threshold)


def _per_image(scores, ious, iou_threshold):
    each = [evaluation.average_precision([s], [i], iou_threshold) for s, i in zip(scores, ious) if i.shape[1]]
    return sum(each) / len(each) if each else evaluation.NO_GROUND_TRUTH


def _objects_reused(scores, ious, iou_threshold):
    """Every detection over the threshold counts, even on an object already found."""
    order = torch.cat([torch.zeros(0, dtype=torch.float64), *scores]).argsort(descending=True, stable=True)
    hits = torch.cat([torch.zeros(0, dtype=torch.bool)] + [(i >= iou_threshold).any(1) for i in ious])[order]
    objects = sum(i.shape[1] for i in ious)
    if objects == 0:
        return evaluation.NO_GROUND_TRUTH
    found = hits.double().cumsum(0)
    return _sampled(found / objects, found / torch.arange(1, len(found) + 1))


def _curve_read(scores, ious, iou_threshold, monotone=True, levels=evaluation.RECALL_LEVELS, unreached=0.0):
    if sum(i.shape[1] for i in ious) == 0:
        return evaluation.NO_GROUND_TRUTH
    recall, precision, _ = evaluation.precision_recall_curve(scores, ious, iou_threshold)
    return _sampled(recall, precision, monotone, levels, unreached)


def _sampled(recall, precision, monotone=True, levels=evaluation.RECALL_LEVELS, unreached=0.0) -> float:
    """Precision read at the recall levels (made monotone or not; `unreached` where recall never gets there:
    0, or None for the last precision), averaged."""
    if monotone:
        precision = precision.flip(0).cummax(0).values.flip(0)
    first = torch.searchsorted(recall.contiguous(), levels)
    last = float(precision[-1]) if len(precision) else 0.0
    fill = last if unreached is None else unreached
    return float(
        torch.stack([precision[i] if i < len(precision) else torch.tensor(fill).double() for i in first]).mean()
    )


def _area_under_curve(scores, ious, iou_threshold):
    """VOC 2010's AP: the area under the monotone curve, every recall step times its precision."""
    if sum(i.shape[1] for i in ious) == 0:
        return evaluation.NO_GROUND_TRUTH
    recall, precision, _ = evaluation.precision_recall_curve(scores, ious, iou_threshold)
    envelope = precision.flip(0).cummax(0).values.flip(0)
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((steps * envelope).sum())


def _no_objects_zero(scores, ious, iou_threshold):
    return 0.0 if sum(i.shape[1] for i in ious) == 0 else evaluation.average_precision(scores, ious, iou_threshold)


def _as_number(fn: Callable, args: tuple) -> Any:
    """What an average_precision case compares: its AP as a float64 number (a tensor of no dimensions), whether
    the function returns a float or a one-element tensor, so that it compares within the tolerance."""
    got = fn(*args)
    if isinstance(got, (int, float)) and not isinstance(got, bool) or isinstance(got, Tensor) and got.numel() == 1:
        return torch.tensor(float(got), dtype=torch.float64)
    return got


@exercise(
    cases=_ap_cases,
    hint="rank every image's detections together by score (a stable sort); each claims the unclaimed object of "
    "its image with the highest IoU >= the threshold; recall = found / objects, precision = found / detections so "
    "far; make precision monotone from the right and average it at recall 0, 0.01, ..., 1 (0 where not reached).",
    steps=(
        "In each image, decide which detections find an object: take its detections from the highest score down "
        "(a stable sort keeps equal scores in their order), and let each claim the object it overlaps most among "
        "those not claimed yet, if that IoU reaches the threshold. The others are false positives.",
        "Rank all images' detections together by score, equal scores image by image and in their order, and count "
        "the true positives so far after each one (a cumulative sum).",
        "After each detection: recall = true positives so far / all objects of all images; precision = true "
        "positives so far / detections so far. These points are the precision-recall curve.",
        "Make precision monotone: each point takes the best precision at its position or later (a running maximum "
        "taken from the end: flip, torch.cummax, flip back).",
        "COCO's 101 recall levels are torch.arange(101, dtype=torch.float64) * 0.01. For each, the first point whose "
        "recall reaches it (torch.searchsorted) gives its precision; a level never reached gives 0. AP is their mean.",
        "No objects in any image: AP is undefined; return -1.0, as pycocotools does, so mAP leaves the class out.",
    ),
    mistakes=(
        Mistake("rank the detections by score, highest first: the order they come in means nothing.", _input_order),
        Mistake(
            "equal scores must keep their order (sort with descending=True, stable=True): sorting ascending and "
            "flipping puts them backwards.",
            _ties_reversed,
        ),
        Mistake(
            "an object is found once: a second detection of it is a false positive (mark the object claimed).",
            _objects_reused,
        ),
        Mistake(
            "a detection claims the object it overlaps MOST among the unclaimed ones, not the first one over the "
            "threshold.",
            _first_object,
        ),
        Mistake("an IoU equal to the threshold counts (>=, not >).", _strictly_above),
        Mistake(
            "make precision monotone before reading it: each point takes the best precision at its recall or beyond.",
            lambda scores, ious, t: _curve_read(scores, ious, t, monotone=False),
        ),
        Mistake(
            "a recall level the detections never reach counts 0, not the last precision.",
            lambda scores, ious, t: _curve_read(scores, ious, t, unreached=None),
        ),
        Mistake(
            "COCO reads precision at 101 recall levels (0, 0.01, ..., 1), not 11 (PASCAL VOC 2007's 0, 0.1, ..., 1).",
            lambda scores, ious, t: _curve_read(scores, ious, t, levels=evaluation.RECALL_LEVELS[::10].contiguous()),
        ),
        Mistake(
            "COCO averages precision at 101 recall levels; the area under the curve (PASCAL VOC 2010 and later) "
            "differs.",
            _area_under_curve,
        ),
        Mistake(
            "rank the detections of all images together: AP is one curve over the whole set, not a mean of each "
            "image's AP.",
            _per_image,
        ),
        Mistake("no objects in any image: AP is undefined, return -1.0 (as pycocotools does).", _no_objects_zero),
    ),
    atol=1e-6,  # float32 sums are welcome
    rtol=0.0,
    reference=evaluation.average_precision,
    outcome=_as_number,
)
def check_average_precision(average_precision: Callable, extra: bool = False) -> None:
    """Check your average_precision(scores, ious, iou_threshold) -> float against the reference (COCO's AP, as
    pycocotools computes it), on per-image scores and IoU matrices of one class."""


# ----- train_step (lesson 07b) -----

STEP_SEED = 0  # both steps sample the same anchors and RoIs
IMAGE_SIZE = 64


def tiny_model() -> MaskRCNN:
    """A Mask R-CNN small enough that a training step takes a fraction of a second: the small model's
    anchors and thresholds, with one basic block per stage, 8 to 64 channels and narrow heads."""
    backbone = BackboneWithFPN(
        ResNetConfig(block=BasicBlock, layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_channels=8), fpn_channels=16
    )
    return MaskRCNN(
        backbone,
        len(data.CLASSES),
        min_size=IMAGE_SIZE,
        max_size=IMAGE_SIZE,
        anchor_sizes=SmallConfig.anchor_sizes,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=50,
        rpn_batch_size_per_image=32,
        representation_size=32,
        box_batch_size_per_image=16,
        mask_layers=(16,),
        mask_dim_reduced=16,
    )


def _after_the_step(train_step: Callable, args: tuple) -> dict[str, Any] | None:
    """What a case compares: the losses the step returns (floats as float64 tensors, so that they compare
    within the tolerance) and the model's weights after it."""
    model = args[0]
    for name, parameter in model.named_parameters():  # a deep copy of a model loses its gradients: put them back
        if name in getattr(model, "leftover_gradients", {}):
            parameter.grad = model.leftover_gradients[name].clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(STEP_SEED)
        losses = train_step(*args)
    if losses is None:
        return None  # run() then asks whether the `return` was forgotten
    if isinstance(losses, dict):
        losses = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in losses.items()}
    return {"losses": losses, "weights after the step": {n: p.detach() for n, p in model.named_parameters()}}


def _step_case(
    name: str, seeds: list[int], optimizer: str, stale_gradients: bool = False, empty: bool = False, extra: bool = False
) -> Case:
    model = tiny_model().train()
    scenes = [data.make_scene(seed, image_size=IMAGE_SIZE, classes=data.CLASSES[1:]) for seed in seeds]
    images = [image for image, _ in scenes]
    targets = [{key: target[key] for key in ("boxes", "labels", "masks")} for _, target in scenes]
    if empty:  # an image without objects: every RoI is background
        targets[-1] = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
        }
    chosen: torch.optim.Optimizer
    if optimizer == "AdamW":
        chosen = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        note = "AdamW(lr=2e-3, weight_decay=1e-4)"
    else:
        chosen = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9 if "momentum" in optimizer else 0.0)
        note = optimizer
    if stale_gradients:  # as if an earlier batch's gradients were still there (_after_the_step puts them in)
        # an attribute of the model's own: nn.Module's typing allows only tensors and modules there
        model.leftover_gradients = {name: torch.randn_like(p) for name, p in model.named_parameters()}  # type: ignore[assignment]
    notes = {
        "model": f"a tiny Mask R-CNN (6 classes, 64-px images), training mode"
        f"{', with gradients left from before' if stale_gradients else ''}",
        "optimizer": note,
        "targets": "; ".join(
            f"boxes {tuple(t['boxes'].shape)}, labels {t['labels'].tolist()}, masks {tuple(t['masks'].shape)}"
            for t in targets
        ),
    }
    return Case(name, (model, chosen, images, targets), notes=notes, extra=extra)


def _step_cases() -> list[Case]:
    return [
        _step_case("one image, SGD", [1], "SGD(lr=0.01)"),
        _step_case("AdamW, as in the course's training", [2], "AdamW"),
        _step_case("gradients left from an earlier step", [3], "SGD(lr=0.01)", stale_gradients=True),
        _step_case("an image without objects", [4], "SGD(lr=0.01)", empty=True, extra=True),
        _step_case(
            "two images, SGD with momentum, old gradients",
            [5, 6],
            "SGD(lr=0.01, momentum=0.9)",
            stale_gradients=True,
            extra=True,
        ),
    ]


def _step_without(*left_out: str) -> Callable:
    """The reference step with some of its calls left out ("zero_grad", "step"), or the gradients
    cleared after backward ("zero_grad_late")."""

    def step(model, optimizer, images, targets):
        losses = model(images, targets)
        loss = sum(losses.values())
        if "zero_grad" not in left_out:
            optimizer.zero_grad()
        loss.backward()
        if "zero_grad_late" in left_out:
            optimizer.zero_grad()
        if "step" not in left_out:
            optimizer.step()
        return {TOTAL: loss.item(), **{name: value.item() for name, value in losses.items()}}

    return step


def _tensors_returned(model, optimizer, images, targets):
    losses = training_step.train_step(model, optimizer, images, targets)
    return {name: torch.tensor(value) for name, value in losses.items()}


@exercise(
    cases=_step_cases,
    hint="losses = model(images, targets) (a dict of five); loss = their sum; optimizer.zero_grad(); "
    "loss.backward(); optimizer.step(); return {'total': loss.item(), and each loss's name: its .item()}.",
    steps=(
        "Ask the model for its losses on the batch.",
        "Add them up.",
        "Clear the gradients, backpropagate the sum, and let the optimizer take its step.",
        "The record: the total and each loss by name, each as a Python number (Tensor.item).",
    ),
    mistakes=(
        Mistake("the weights did not move: call optimizer.step() after loss.backward().", _step_without("step")),
        Mistake(
            "clear the old gradients BEFORE backward (optimizer.zero_grad()): backward adds to whatever "
            "gradients are already there.",
            _step_without("zero_grad"),
        ),
        Mistake(
            "optimizer.zero_grad() came after backward: it cleared the new gradients before the step could use them.",
            _step_without("zero_grad_late"),
        ),
        Mistake(
            "return plain Python floats ({name: value.item()}): tensors keep the whole graph of the step "
            "alive, and the training trace stores numbers.",
            _tensors_returned,
        ),
    ),
    atol=1e-5,
    rtol=1e-4,
    reference=training_step.train_step,
    outcome=_after_the_step,
)
def check_train_step(train_step: Callable, extra: bool = False) -> None:
    """Check your train_step(model, optimizer, images, targets) -> {name: float} against the reference step,
    on copies of the same tiny model: the losses it returns and the weights it leaves."""
