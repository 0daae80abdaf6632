"""Measuring a detector: COCO mAP with pycocotools, average precision written out, recall and precision.

    result = evaluate(model, ShapesDataset(100, seed=7))
    result["mask_map50"], result["recall"], result["precision"]    # floats in [0, 1]
    coco_map(predictions, targets)               # box_map, box_map50, mask_map, mask_map50
    scores, ious = class_scores_and_ious(predictions, targets, label=1)
    average_precision(scores, ious, iou_threshold=0.5)              # COCO's AP of class 1, as pycocotools

Shapes:
    T detections in an image;  G ground-truth objects;  H, W the image size
    prediction  the model's output: boxes float [T, 4] (x1, y1, x2, y2), labels int64 [T], scores [T],
                masks [T, 1, H, W] (probabilities, or 0/1)
    target      the dataset's form: boxes [G, 4], labels [G], masks uint8 [G, H, W] (0/1);
                area [G] and iscrowd [G] are used when present

Average precision (AP) of one class: rank the detections of every image by score, highest first; going
down the ranking, a detection is a true positive if it finds an object of its image that no
higher-scored detection found (IoU >= the threshold), else a false positive. After each detection,
recall = true positives / objects and precision = true positives / detections so far: the
precision-recall curve. COCO makes precision monotone (each point takes the best precision at its
recall or beyond), reads it at the 101 recall levels 0, 0.01, ..., 1 (0 where recall never gets
there) and averages. average_precision does that in plain torch; coco_map asks pycocotools. mAP
averages AP over the classes that have ground truth, at IoU 0.5 (map50) or over IoU 0.5, 0.55, ...,
0.95 (map); boxes compare by box IoU, masks by mask IoU. A predicted mask is its pixels above
MASK_THRESHOLD (0.5), as in COCO results.

recall_and_precision reads the detector at one operating point instead (score >= 0.5): the share of the
objects found and the share of the detections that are right. The training trace shows both each epoch.

Left out: COCOeval's per-size and recall figures (run COCOeval on targets_to_coco / predictions_to_coco
for those), keypoints. average_precision knows no crowd regions (the course's scenes have none: COCO
ignores a crowd region and the detections that fall on it).
"""

import contextlib
import io

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from mrcnn_course.model import box_ops
from mrcnn_course.model.mask_head import MASK_THRESHOLD
from mrcnn_course.training.coco import CocoFolder, coco_annotations
from mrcnn_course.training.data import SceneSet, collate
from mrcnn_course.training.encoding import encode_detections

MAP_NAMES = ("box_map", "box_map50", "mask_map", "mask_map50")
MAX_DETECTIONS = 100  # COCO's maxDets: only the 100 highest-scored detections of an image count
# COCO's 101 recall levels, made as numpy.linspace(0, 1, 101) makes them (i * 0.01, not i / 100: level 70
# is 0.7000000000000001, so a recall of 7/10 does not reach it, in pycocotools as here)
RECALL_LEVELS = torch.arange(101, dtype=torch.float64) * 0.01
NO_GROUND_TRUTH = -1.0  # pycocotools' AP of a class without objects: mAP leaves the class out


def binary_masks(masks: Tensor) -> Tensor:
    """Masks [T, 1, H, W] or [T, H, W] (probabilities or 0/1) -> bool [T, H, W]: pixels above MASK_THRESHOLD."""
    return masks.detach().cpu().reshape(len(masks), *masks.shape[-2:]) > MASK_THRESHOLD


def rles(detections: dict[str, Tensor]) -> list[dict]:
    """COCO run-length encodings {"size": [H, W], "counts": str} of a prediction's or a target's masks
    (encoding.encode_detections thresholds predicted masks at MASK_THRESHOLD)."""
    encoded = encode_detections(detections)
    return [{"size": encoded["size"], "counts": counts} for counts in encoded["masks"]]


def check_pairs(predictions: list[dict], targets: list[dict]) -> None:
    """One prediction per target, masks [T, 1, H, W] and [G, H, W] of the same image size."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets: give one per image")
    for i, (prediction, target) in enumerate(zip(predictions, targets)):
        predicted, true = prediction["masks"], target["masks"]
        if predicted.dim() != 4 or predicted.shape[1] != 1 or true.dim() != 3:
            raise ValueError(
                f"image {i}: expected predicted masks [T, 1, H, W] and target masks [G, H, W], got "
                f"{tuple(predicted.shape)} and {tuple(true.shape)}"
            )
        if predicted.shape[-2:] != true.shape[-2:]:
            raise ValueError(
                f"image {i}: predicted masks are {tuple(predicted.shape[-2:])} but the target's are "
                f"{tuple(true.shape[-2:])}: map the predictions back to the image's size"
            )


def targets_to_coco(targets: list[dict]) -> dict:
    """The ground truth as a COCO dataset dict; image i gets id i, category ids are the labels."""
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, target in enumerate(targets):
        height, width = target["masks"].shape[-2:]
        images.append({"id": image_id, "height": height, "width": width})
        annotations += coco_annotations(target, image_id, first_id=len(annotations) + 1)
    labels = sorted({a["category_id"] for a in annotations})
    return {"images": images, "annotations": annotations, "categories": [{"id": c} for c in labels]}


def predictions_to_coco(predictions: list[dict]) -> list[dict]:
    """The detections as COCO results (bbox [x, y, w, h], segmentation RLE, score); image i gets id i."""
    results = []
    for image_id, prediction in enumerate(predictions):
        for (x1, y1, x2, y2), label, score, rle in zip(
            prediction["boxes"].tolist(), prediction["labels"].tolist(), prediction["scores"].tolist(), rles(prediction)
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                    "segmentation": rle,
                }
            )
    return results


def coco_map(predictions: list[dict], targets: list[dict]) -> dict[str, float]:
    """COCO box and mask mAP of `predictions` against `targets` (one each per image), by pycocotools.

    Returns {"box_map", "box_map50", "mask_map", "mask_map50"}: mAP averaged over IoU 0.5:0.95 and at 0.5.
    No detections at all give 0.0; images without objects count (their detections are false positives).
    """
    check_pairs(predictions, targets)
    ground_truth = targets_to_coco(targets)
    if not ground_truth["annotations"]:
        raise ValueError("the targets hold no objects at all: mAP measures found objects, so it is undefined")
    if all(a["iscrowd"] for a in ground_truth["annotations"]):
        raise ValueError(
            "every object of the targets is a crowd region (iscrowd=1): COCO's mAP ignores crowd regions, so it "
            "is undefined (pycocotools prints -1); set iscrowd=0 on the objects that should count"
        )
    results = predictions_to_coco(predictions)
    if not results:
        return dict.fromkeys(MAP_NAMES, 0.0)  # nothing detected: precision 0 everywhere (and loadRes fails on [])
    figures = {}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print their progress and tables
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        detections = truth.loadRes(results)
        for iou_type, name in (("bbox", "box"), ("segm", "mask")):
            evaluator = COCOeval(truth, detections, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            # stats[0]: AP at IoU .50:.95, all areas, 100 detections; stats[1]: AP at IoU .50
            figures[f"{name}_map"], figures[f"{name}_map50"] = float(evaluator.stats[0]), float(evaluator.stats[1])
    return figures


def mask_iou(masks1: Tensor, masks2: Tensor) -> Tensor:
    """IoU of every pair of boolean masks: masks1 [N, H, W], masks2 [M, H, W] -> Tensor[N, M] (0 if both empty)."""
    flat1, flat2 = masks1.flatten(1).float(), masks2.flatten(1).float()  # (N, HW), (M, HW)
    intersection = flat1 @ flat2.T  # (N, M): pixels in both
    union = flat1.sum(1)[:, None] + flat2.sum(1)[None, :] - intersection
    return intersection / union.clamp(min=1)


def match_detections(scores: Tensor, ious: Tensor, iou_threshold: float) -> Tensor:
    """Which detections of one image (and one class) find an object: bool Tensor[T], in the input order.

    scores [T]; ious [T, G], the IoU of each detection with each object (below 0 never matches). Greedy
    by score, as COCOeval: from the highest score down (equal scores in input order: a stable sort), each
    detection claims the unclaimed object with the highest IoU >= iou_threshold (among equal IoUs the
    last, as COCOeval's loop does); a detection that finds none, or only objects already claimed, is a
    false positive.
    """
    matched = torch.zeros(len(scores), dtype=torch.bool)
    claimed = torch.zeros(ious.shape[1], dtype=torch.bool)
    if ious.shape[1] == 0:
        return matched
    for d in scores.argsort(descending=True, stable=True).tolist():
        candidates = ious[d].masked_fill(claimed, -1)
        if candidates.max() >= iou_threshold:
            best = len(candidates) - 1 - int(candidates.flip(0).argmax())  # the last of the highest
            claimed[best] = matched[d] = True
    return matched


def precision_recall_curve(
    scores: list[Tensor], ious: list[Tensor], iou_threshold: float = 0.5
) -> tuple[Tensor, Tensor, Tensor]:
    """The precision-recall curve of one class over several images.

    Args: per image, scores Tensor[T_i] and ious Tensor[T_i, G_i] (each detection against each object of
    its class in that image); at most MAX_DETECTIONS per image.
    Returns (recall, precision, scores), each float64 Tensor[T] with T = sum of T_i, after each detection of
    the ranking over all images (by score, highest first; equal scores image by image, then in input order).
    """
    if len(scores) != len(ious):
        raise ValueError(f"{len(scores)} score tensors for {len(ious)} IoU matrices: give one of each per image")
    for i, (image_scores, image_ious) in enumerate(zip(scores, ious)):
        if image_ious.dim() != 2 or image_ious.shape[0] != len(image_scores):
            raise ValueError(
                f"image {i}: {len(image_scores)} scores but IoUs of shape {tuple(image_ious.shape)}: "
                f"expected [T, G], one row per detection"
            )
        if len(image_scores) > MAX_DETECTIONS:
            raise ValueError(
                f"image {i} has {len(image_scores)} detections: COCO counts only the {MAX_DETECTIONS} "
                f"highest-scored per image; keep those"
            )
    objects = sum(image_ious.shape[1] for image_ious in ious)
    all_scores = torch.cat([torch.zeros(0, dtype=torch.float64), *(s.detach().double() for s in scores)])
    found = torch.cat(
        [torch.zeros(0, dtype=torch.bool)] + [match_detections(s, i, iou_threshold) for s, i in zip(scores, ious)]
    )
    order = all_scores.argsort(descending=True, stable=True)
    true_positives = found[order].double().cumsum(0)
    ranks = torch.arange(1, len(order) + 1, dtype=torch.float64)
    return true_positives / max(objects, 1), true_positives / ranks, all_scores[order]


def average_precision(scores: list[Tensor], ious: list[Tensor], iou_threshold: float = 0.5) -> float:
    """COCO's average precision of one class over several images: the precision-recall curve
    (precision_recall_curve), made monotone from the right, read at the 101 RECALL_LEVELS (0 where
    recall never reaches a level) and averaged. NO_GROUND_TRUTH (-1.0) when no image has an object;
    0.0 when there are objects but no detections. Equal to pycocotools' COCOeval on the same detections
    for that class and IoU threshold, with crowd regions left out (tests/training/test_evaluation.py)."""
    if sum(image_ious.shape[1] for image_ious in ious) == 0:
        precision_recall_curve(scores, ious, iou_threshold)  # the same input checks
        return NO_GROUND_TRUTH
    recall, precision, _ = precision_recall_curve(scores, ious, iou_threshold)
    envelope = precision.flip(0).cummax(0).values.flip(0)  # the best precision at this recall or beyond
    first = torch.searchsorted(recall, RECALL_LEVELS)  # the first detection whose recall reaches each level
    reached = first < len(recall)
    sampled = torch.zeros(len(RECALL_LEVELS), dtype=torch.float64)
    sampled[reached] = envelope[first[reached]]
    return float(sampled.mean())


def class_scores_and_ious(
    predictions: list[dict], targets: list[dict], label: int, iou_type: str = "mask"
) -> tuple[list[Tensor], list[Tensor]]:
    """What average_precision takes, for class `label`: per image, the scores [T_i] of its detections of
    that class (the MAX_DETECTIONS best) and their IoUs [T_i, G_i] with its objects of that class, by mask
    ("mask", predicted masks above MASK_THRESHOLD) or by box ("box"). Crowd regions are refused: COCO
    would ignore them, average_precision does not know them."""
    if iou_type not in ("mask", "box"):
        raise ValueError(f'iou_type must be "mask" or "box", got {iou_type!r}')
    check_pairs(predictions, targets)
    scores, ious = [], []
    for i, (prediction, target) in enumerate(zip(predictions, targets)):
        if "iscrowd" in target and bool(target["iscrowd"].bool().any()):
            raise ValueError(
                f"image {i} has crowd regions (iscrowd=1): COCO ignores them, average_precision does not; "
                f"use coco_map for this data"
            )
        mine = (prediction["labels"].cpu() == label).nonzero()[:, 0]
        mine = mine[prediction["scores"].detach().cpu()[mine].argsort(descending=True, stable=True)][:MAX_DETECTIONS]
        objects = (target["labels"].cpu() == label).nonzero()[:, 0]
        if iou_type == "mask":
            iou = mask_iou(binary_masks(prediction["masks"][mine]), binary_masks(target["masks"][objects]))
        else:
            iou = box_ops.box_iou(
                prediction["boxes"].detach().cpu()[mine].double(), target["boxes"].cpu()[objects].double()
            )
        scores.append(prediction["scores"].detach().cpu()[mine])
        ious.append(iou.double())
    return scores, ious


def recall_and_precision(
    predictions: list[dict], targets: list[dict], iou_threshold: float = 0.5, score_threshold: float = 0.5
) -> dict[str, float]:
    """The detector at one operating point: {"recall", "precision"} over all images.

    Only detections with score >= score_threshold count. A detection finds an object of its class when
    their masks' IoU >= iou_threshold (predicted masks thresholded at 0.5), matched greedily by score as in
    COCO (match_detections): one detection finds at most one object, and a duplicate finds nothing more.
    recall: the share of the objects found; precision: the share of the counted detections that found an
    object (0.0 when nothing scores that high: nothing it claims is right). iscrowd is not looked at.
    """
    check_pairs(predictions, targets)
    found = detections = objects = 0
    for prediction, target in zip(predictions, targets):
        confident = prediction["scores"].detach().cpu() >= score_threshold
        labels = prediction["labels"].cpu()[confident]  # (T,)
        iou = mask_iou(binary_masks(prediction["masks"][confident]), binary_masks(target["masks"]))  # (T, G)
        iou[labels[:, None] != target["labels"].cpu()[None, :]] = -1  # another class never matches
        found += int(match_detections(prediction["scores"].detach().cpu()[confident], iou, iou_threshold).sum())
        detections += len(labels)
        objects += len(target["labels"])
    if objects == 0:
        raise ValueError("the targets hold no objects at all: the share of objects found is undefined")
    return {"recall": found / objects, "precision": found / detections if detections else 0.0}


def evaluate(model: nn.Module, dataset: SceneSet, batch_size: int = 8) -> dict:
    """Run `model` in eval mode (torch.no_grad) over `dataset` and measure it.

    Returns box_map, box_map50, mask_map, mask_map50 (coco_map), recall and precision (recall_and_precision,
    at score >= 0.5) and predictions: the model's output per image, on the CPU, with masks thresholded to
    uint8 0/1 [T, 1, H, W] (a quarter of the memory of probabilities: 100 images of 100 detections at 128 px
    would take 650 MB). The model's train/eval mode is restored afterwards.
    """
    if len(dataset) == 0 or batch_size < 1:
        raise ValueError(
            f"need a non-empty dataset and batch_size >= 1, got {len(dataset)} images and batch_size {batch_size}"
        )
    num_classes = getattr(model, "num_classes", None)
    if isinstance(dataset, CocoFolder) and isinstance(num_classes, int):
        dataset.check_classes(num_classes)  # before the model runs over all of it
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                images, batch_targets = collate(
                    [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                )
                for output in model([image.to(device) for image in images]):
                    output = {key: value.cpu() for key, value in output.items()}
                    output["masks"] = binary_masks(output["masks"]).to(torch.uint8)[:, None]  # (T, 1, H, W)
                    predictions.append(output)
                targets += batch_targets
    finally:
        model.train(was_training)
    return {
        **coco_map(predictions, targets),
        **recall_and_precision(predictions, targets),
        "predictions": predictions,
    }
