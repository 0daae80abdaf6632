"""Measuring a detector: COCO mAP with pycocotools, and detection accuracy.

    result = evaluate(model, ShapesDataset(100, seed=7))
    result["mask_map50"], result["accuracy"]     # floats in [0, 1]
    coco_map(predictions, targets)               # box_map, box_map50, mask_map, mask_map50

Shapes:
    T detections in an image;  G ground-truth objects;  H, W the image size
    prediction  the model's output: boxes float [T, 4] (x1, y1, x2, y2), labels int64 [T], scores [T],
                masks [T, 1, H, W] (probabilities, or 0/1)
    target      the dataset's form: boxes [G, 4], labels [G], masks uint8 [G, H, W] (0/1);
                area [G] and iscrowd [G] are used when present

mAP is COCO's: the area under the precision-recall curve (101 recall points), averaged over the classes
that have ground truth, at IoU 0.5 (map50) or averaged over IoU 0.5, 0.55, ..., 0.95 (map); boxes compare
by box IoU, masks by mask IoU. A predicted mask is its pixels above MASK_THRESHOLD (0.5), as in COCO
results. Accuracy is simpler and easier to read: the share of objects found (detection_accuracy).

Left out: COCOeval's per-size and recall figures (run COCOeval on targets_to_coco / predictions_to_coco
for those), keypoints.
"""

import contextlib
import io

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from mrcnn_course.model.mask_head import MASK_THRESHOLD
from mrcnn_course.training.coco import CocoFolder, coco_annotations
from mrcnn_course.training.data import SceneSet, collate
from mrcnn_course.training.encoding import encode_detections

MAP_NAMES = ("box_map", "box_map50", "mask_map", "mask_map50")


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


def detection_accuracy(
    predictions: list[dict], targets: list[dict], iou_threshold: float = 0.5, score_threshold: float = 0.5
) -> float:
    """The share of ground-truth objects detected, over all images.

    An object is detected when a prediction with score >= score_threshold, of the object's class, covers
    its mask with mask IoU >= iou_threshold (predicted masks thresholded at 0.5). Matching is greedy by
    score: predictions are taken from the highest score down, and each claims the unclaimed object of its
    class with the highest IoU (if >= iou_threshold), so one prediction finds at most one object and a
    duplicate detection finds nothing more. iscrowd is not looked at: every object counts.
    """
    check_pairs(predictions, targets)
    found = total = 0
    for prediction, target in zip(predictions, targets):
        confident = prediction["scores"].detach().cpu() >= score_threshold
        order = prediction["scores"].detach().cpu()[confident].argsort(descending=True, stable=True)
        labels = prediction["labels"].cpu()[confident][order]  # (T,) by decreasing score
        iou = mask_iou(binary_masks(prediction["masks"])[confident][order], binary_masks(target["masks"]))  # (T, G)
        iou[labels[:, None] != target["labels"].cpu()[None, :]] = -1  # another class never matches
        claimed = torch.zeros(len(target["labels"]), dtype=torch.bool)
        for row in iou:
            candidates = row.masked_fill(claimed, -1)
            if len(candidates) and candidates.max() >= iou_threshold:
                claimed[candidates.argmax()] = True
        found += int(claimed.sum())
        total += len(claimed)
    if total == 0:
        raise ValueError("the targets hold no objects at all: the share of objects found is undefined")
    return found / total


def evaluate(model: nn.Module, dataset: SceneSet, batch_size: int = 8) -> dict:
    """Run `model` in eval mode (torch.no_grad) over `dataset` and measure it.

    Returns box_map, box_map50, mask_map, mask_map50 (coco_map), accuracy (detection_accuracy) and
    predictions: the model's output per image, on the CPU, with masks thresholded to uint8 0/1
    [T, 1, H, W] (a quarter of the memory of probabilities: 100 images of 100 detections at 128 px would
    take 650 MB). The model's train/eval mode is restored afterwards.
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
        "accuracy": detection_accuracy(predictions, targets),
        "predictions": predictions,
    }
