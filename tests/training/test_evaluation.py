"""evaluation: COCO mAP on hand-made cases with known answers, recall and precision, evaluate on a model;
average_precision against pycocotools' COCOeval on the same detections (ordinary cases and the edge
cases: no detections, no objects, ties in score, a detection overlapping two objects, IoU at the threshold).
Also bad input: targets that are all crowd regions leave mAP undefined.
"""

import contextlib
import io
import re

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from mrcnn_course.model import box_ops
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import data, evaluation

SIZE = (24, 32)  # (H, W): small images keep pycocotools quick
ONE_OF_TWO = 51 / 101  # COCO's AP at recall 0.5 with precision 1: 51 of its 101 recall points (0, 0.01, ..., 0.5)


def mask(x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    m = torch.zeros(SIZE, dtype=torch.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def target(*objects: tuple[tuple[int, int, int, int], int]) -> dict:
    """A target of rectangles: objects ((x1, y1, x2, y2), label)."""
    masks = torch.stack([mask(*box) for box, _ in objects]) if objects else torch.zeros(0, *SIZE, dtype=torch.uint8)
    return {
        "boxes": torch.tensor([box for box, _ in objects], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label for _, label in objects], dtype=torch.int64),
        "masks": masks,
    }


def prediction(*detections: tuple[tuple[int, int, int, int], int, float], masks: list | None = None) -> dict:
    """Detections ((x1, y1, x2, y2), label, score), in model output form; masks default to the box filled
    with probability 0.9 (a given list of [H, W] masks replaces them)."""
    probabilities = [0.9 * mask(*box).float() for box, _, _ in detections] if masks is None else masks
    return {
        "boxes": torch.tensor([box for box, _, _ in detections], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label for _, label, _ in detections], dtype=torch.int64),
        "scores": torch.tensor([score for _, _, score in detections], dtype=torch.float32),
        "masks": torch.stack(probabilities)[:, None] if detections else torch.zeros(0, 1, *SIZE),
    }


A, B, C = (2, 2, 12, 10), (16, 4, 30, 20), (5, 12, 15, 22)  # three boxes that do not overlap


def recall(*args, **kwargs) -> float:
    return evaluation.recall_and_precision(*args, **kwargs)["recall"]


def precision(*args, **kwargs) -> float:
    return evaluation.recall_and_precision(*args, **kwargs)["precision"]


def maps(value: float) -> dict:
    return dict.fromkeys(evaluation.MAP_NAMES, pytest.approx(value))


def test_perfect_predictions_score_one():
    targets = [target((A, 1), (B, 2)), target((C, 3))]
    predictions = [prediction((A, 1, 0.9), (B, 2, 0.8)), prediction((C, 3, 0.7))]
    assert evaluation.coco_map(predictions, targets) == maps(1.0)
    assert recall(predictions, targets) == 1.0


def test_one_of_two_objects_found():
    same_class = [target((A, 1), (B, 1))]
    found_a = [prediction((A, 1, 0.9))]
    assert evaluation.coco_map(found_a, same_class) == maps(ONE_OF_TWO)
    assert recall(found_a, same_class) == 0.5
    two_classes = [target((A, 1), (B, 2))]
    assert evaluation.coco_map(found_a, two_classes) == maps(0.5)  # AP 1 for class 1, 0 for class 2


def test_the_wrong_class_finds_nothing():
    targets = [target((A, 1))]
    predictions = [prediction((A, 2, 0.99))]
    assert evaluation.coco_map(predictions, targets) == maps(0.0)
    assert recall(predictions, targets) == 0.0


def test_no_predictions_at_all_score_zero():
    targets = [target((A, 1)), target((B, 2))]
    assert evaluation.coco_map([prediction(), prediction()], targets) == maps(0.0)
    assert recall([prediction(), prediction()], targets) == 0.0


def test_an_image_without_objects_counts_its_false_positives():
    targets = [target((A, 1)), target()]
    after = [prediction((A, 1, 0.9)), prediction((B, 1, 0.5))]  # the false positive ranks below the true one
    assert evaluation.coco_map(after, targets) == maps(1.0)
    before = [prediction((A, 1, 0.5)), prediction((B, 1, 0.9))]  # precision 1/2 when recall reaches 1
    assert evaluation.coco_map(before, targets) == maps(0.5)
    assert recall(before, targets) == 1.0 and precision(before, targets) == 0.5  # the false positive counts there


def test_boxes_and_masks_are_measured_apart():
    targets = [target((A, 1))]
    x1, y1, x2, y2 = A
    thin = mask(x1, y1, x1 + 2, y2).float()  # the right box, but a mask of a fifth of the object
    predictions = [prediction((A, 1, 0.9), masks=[thin])]
    result = evaluation.coco_map(predictions, targets)
    assert result["box_map"] == pytest.approx(1.0) and result["mask_map"] == pytest.approx(0.0)
    assert recall(predictions, targets) == 0.0  # recall and precision compare masks


def test_predicted_masks_are_thresholded_at_one_half():
    targets = [target((A, 1))]
    faint = [prediction((A, 1, 0.9), masks=[0.5 * mask(*A).float()])]  # 0.5 is not above 0.5: an empty mask
    assert evaluation.coco_map(faint, targets)["mask_map"] == pytest.approx(0.0)
    assert recall(faint, targets) == 0.0


def test_recall_thresholds_on_iou_and_score():
    targets = [target(((0, 0, 10, 10), 1))]
    half = [prediction(((0, 0, 10, 10), 1, 0.9), masks=[mask(0, 0, 5, 10).float()])]  # mask IoU exactly 0.5
    assert recall(half, targets) == 1.0
    assert recall(half, targets, iou_threshold=0.51) == 0.0
    less = [prediction(((0, 0, 10, 10), 1, 0.9), masks=[mask(0, 0, 4, 10).float()])]  # IoU 0.4
    assert recall(less, targets) == 0.0
    unsure = [prediction(((0, 0, 10, 10), 1, 0.4))]
    assert recall(unsure, targets) == 0.0
    assert recall(unsure, targets, score_threshold=0.3) == 1.0
    assert precision(unsure, targets) == 0.0  # nothing scores 0.5: nothing it claims is right


def test_recall_and_precision_match_each_prediction_once_greedily_by_score():
    targets = [target((A, 1), (B, 1))]
    duplicates = [prediction((A, 1, 0.9), (A, 1, 0.8))]  # two detections of one object find one object
    assert evaluation.recall_and_precision(duplicates, targets) == {"recall": 0.5, "precision": 0.5}
    # Greedy, not the best assignment: the surer prediction claims its best object (right, IoU 0.59) though it
    # also covers the left one (IoU 0.35); the other prediction covers only the right one and finds it taken.
    left, right = (0, 0, 10, 10), (10, 0, 20, 10)
    pair = [target((left, 1), (right, 1))]
    spanning = [prediction(((3, 0, 20, 10), 1, 0.9), (right, 1, 0.6))]
    assert recall(spanning, pair, iou_threshold=0.3) == 0.5
    spanning_second = [prediction(((3, 0, 20, 10), 1, 0.6), (right, 1, 0.9))]
    assert recall(spanning_second, pair, iou_threshold=0.3) == 1.0


def test_mask_iou():
    masks1 = torch.stack([mask(0, 0, 4, 4), mask(0, 0, 2, 4), torch.zeros(SIZE, dtype=torch.uint8)]).bool()
    masks2 = torch.stack([mask(0, 0, 4, 4), mask(10, 10, 12, 12)]).bool()
    assert evaluation.mask_iou(masks1, masks2).tolist() == [[1.0, 0.0], [0.5, 0.0], [0.0, 0.0]]
    assert evaluation.mask_iou(masks1[:0], masks2).shape == (0, 2)


def test_coco_dicts_use_xywh_boxes_and_annotation_ids_from_one():
    gt = evaluation.targets_to_coco([target((A, 1), (B, 2)), target()])
    assert [image["id"] for image in gt["images"]] == [0, 1]
    assert gt["images"][0]["height"] == 24 and gt["images"][0]["width"] == 32
    assert [a["id"] for a in gt["annotations"]] == [1, 2]
    assert gt["annotations"][0]["bbox"] == [2, 2, 10, 8] and gt["annotations"][0]["area"] == 80
    assert gt["categories"] == [{"id": 1}, {"id": 2}]
    results = evaluation.predictions_to_coco([prediction((A, 1, 0.75)), prediction()])
    assert len(results) == 1 and results[0]["bbox"] == [2, 2, 10, 8] and results[0]["score"] == 0.75
    assert results[0]["segmentation"]["size"] == [24, 32]


def test_bad_input_is_explained():
    targets = [target((A, 1))]
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        evaluation.coco_map([prediction()], targets * 2)
    flat = prediction((A, 1, 0.9))
    flat["masks"] = flat["masks"][:, 0]
    with pytest.raises(ValueError, match=r"\[T, 1, H, W\]"):
        evaluation.coco_map([flat], targets)
    wrong_size = prediction((A, 1, 0.9))
    wrong_size["masks"] = torch.zeros(1, 1, 48, 64)
    with pytest.raises(ValueError, match="image's size"):
        recall([wrong_size], targets)
    with pytest.raises(ValueError, match="no objects at all"):
        evaluation.coco_map([prediction()], [target()])
    with pytest.raises(ValueError, match="no objects at all"):
        recall([prediction()], [target()])


class Oracle(nn.Module):
    """A "model" that answers with the dataset's own targets: evaluate must then measure 1.0 everywhere."""

    def __init__(self, dataset):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # evaluate finds the device from the parameters
        self.answers = [dataset[i][1] for i in range(len(dataset))]
        self.seen = 0
        self.grad_enabled = []

    def forward(self, images):
        self.grad_enabled.append(torch.is_grad_enabled())
        assert not self.training
        answers = self.answers[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return [
            {
                "boxes": t["boxes"],
                "labels": t["labels"],
                "scores": torch.ones(len(t["labels"])),
                "masks": 0.8 * t["masks"][:, None].float(),
            }
            for t in answers
        ]


def test_evaluate_runs_the_model_in_eval_mode_without_gradients():
    dataset = data.ShapesDataset(5, 32, seed=1, classes=data.CLASSES[1:])
    oracle = Oracle(dataset).train()
    result = evaluation.evaluate(oracle, dataset, batch_size=2)
    assert oracle.seen == 5 and oracle.grad_enabled == [False] * 3  # batches of 2, 2, 1
    assert oracle.training  # the mode is restored
    assert {k: result[k] for k in evaluation.MAP_NAMES} == maps(1.0)
    assert result["recall"] == result["precision"] == 1.0
    first = result["predictions"][0]
    assert first["masks"].dtype == torch.uint8 and first["masks"].shape[1:] == (1, 32, 32)
    assert torch.equal(first["masks"][:, 0], dataset[0][1]["masks"])  # 0.8 thresholded to 1
    with pytest.raises(ValueError, match="non-empty dataset"):
        evaluation.evaluate(oracle, [])


def test_evaluate_an_untrained_model():
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=len(data.CLASSES))
    result = evaluation.evaluate(model, data.ShapesDataset(2, 64, classes=data.CLASSES[1:]), batch_size=2)
    assert set(result) == {*evaluation.MAP_NAMES, "recall", "precision", "predictions"}
    assert all(0 <= result[k] <= 1 for k in (*evaluation.MAP_NAMES, "recall", "precision"))
    assert len(result["predictions"]) == 2
    assert result["predictions"][0]["masks"].shape[-2:] == (64, 64)


def test_every_object_a_crowd_region_makes_map_undefined_not_minus_one():
    image, truth = data.make_scene(3, 64)
    truth["iscrowd"] = torch.ones_like(truth["iscrowd"])
    prediction = {**truth, "scores": torch.ones(len(truth["labels"])), "masks": truth["masks"][:, None].float()}
    with pytest.raises(ValueError, match=re.escape("every object of the targets is a crowd region (iscrowd=1)")):
        evaluation.coco_map([prediction], [truth])


# ----- average_precision, written out, against pycocotools -----


def coco_average_precision(objects: list[list], detections: list[list], iou_threshold: float) -> float:
    """pycocotools' AP of one class at one IoU threshold: objects per image [(x1, y1, x2, y2)], detections per
    image [((x1, y1, x2, y2), score)]; -1 when there are no objects, as COCOeval says it."""

    def coco(annotations: list[dict]) -> COCO:
        dataset = COCO()
        images = [{"id": i, "height": 100, "width": 100} for i in range(len(objects))]
        dataset.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
        dataset.createIndex()
        return dataset

    def annotation(index: int, image: int, box: tuple, **extra) -> dict:
        x1, y1, x2, y2 = box
        bbox = [x1, y1, x2 - x1, y2 - y1]
        return {"id": index + 1, "image_id": image, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3], **extra}

    truth = coco([annotation(i, image, box, iscrowd=0) for i, (image, box) in enumerate(flatten(objects))])
    found = coco(
        [
            annotation(i, image, box, score=score, iscrowd=0)
            for i, (image, (box, score)) in enumerate(flatten(detections))
        ]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(truth, found, "bbox")
        evaluator.params.iouThrs = np.array([iou_threshold])
        evaluator.evaluate()
        evaluator.accumulate()
    sampled = evaluator.eval["precision"][0, :, 0, 0, -1]  # 101 recall levels; class 1, all areas, 100 detections
    return float(sampled.mean()) if (sampled > -1).all() else -1.0


def flatten(per_image: list[list]) -> list[tuple]:
    return [(image, item) for image, items in enumerate(per_image) for item in items]


def course_average_precision(objects: list[list], detections: list[list], iou_threshold: float) -> float:
    """evaluation.average_precision on the same input: scores and box IoUs per image."""
    scores = [torch.tensor([score for _, score in image], dtype=torch.float64) for image in detections]
    ious = [
        box_ops.box_iou(
            torch.tensor([box for box, _ in found], dtype=torch.float64).reshape(-1, 4),
            torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        )
        for found, boxes in zip(detections, objects)
    ]
    return evaluation.average_precision(scores, ious, iou_threshold)


LEFT, RIGHT, APART = (0, 0, 10, 10), (10, 0, 20, 10), (40, 40, 60, 60)
EDGE_CASES = {
    "no detections": ([[LEFT, RIGHT]], [[]], 0.5),
    "no objects": ([[], []], [[(LEFT, 0.9)], []], 0.5),
    "no objects and no detections": ([[]], [[]], 0.5),
    "ties in score, the false positive first": ([[LEFT]], [[(APART, 0.8), (LEFT, 0.8)]], 0.5),
    "ties in score, the true positive first": ([[LEFT]], [[(LEFT, 0.8), (APART, 0.8)]], 0.5),
    "ties in score across images": ([[LEFT], [RIGHT]], [[(APART, 0.7)], [(RIGHT, 0.7), (APART, 0.7)]], 0.5),
    # (3, 0, 20, 10) overlaps LEFT (IoU 0.35) and RIGHT (0.59): it claims RIGHT, the best; the second finds LEFT
    "a detection overlapping two objects": ([[LEFT, RIGHT]], [[((3, 0, 20, 10), 0.9), ((0, 0, 9, 10), 0.8)]], 0.3),
    "a detection overlapping two objects, the other taken first": (
        [[LEFT, RIGHT]],
        [[((3, 0, 20, 10), 0.6), (RIGHT, 0.9)]],
        0.3,
    ),
    "a duplicate detection is a false positive": ([[LEFT, APART]], [[(LEFT, 0.9), (LEFT, 0.8), (APART, 0.7)]], 0.5),
    "IoU exactly at the threshold counts": ([[LEFT]], [[((0, 0, 5, 10), 0.9)]], 0.5),
    "IoU just under the threshold does not": ([[LEFT]], [[((0, 0, 5, 10), 0.9)]], 0.51),
    "detections in an image without objects": ([[LEFT], []], [[(LEFT, 0.5)], [(LEFT, 0.9)]], 0.5),
    "recall never reaches 1": ([[LEFT, RIGHT, APART]], [[(LEFT, 0.9), ((30, 30, 35, 35), 0.8)]], 0.5),
    "ten objects: recall 0.7 falls short of pycocotools' level 0.7": (
        [[(10 * i, 0, 10 * i + 8, 8) for i in range(10)]],
        [[((10 * i, 0, 10 * i + 8, 8), 1 - i / 20) for i in range(7)]],
        0.5,
    ),
}


@pytest.mark.parametrize("objects, detections, iou_threshold", EDGE_CASES.values(), ids=list(EDGE_CASES))
def test_average_precision_is_pycocotools_on_the_edge_cases(objects, detections, iou_threshold):
    expected = coco_average_precision(objects, detections, iou_threshold)
    assert course_average_precision(objects, detections, iou_threshold) == pytest.approx(expected, abs=1e-12)


def test_average_precision_is_pycocotools_on_random_detections():
    """Many images of random boxes with detections near them, scores with ties, at three thresholds."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(60):
        objects, detections = [], []
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            corners = torch.randint(0, 60, (int(torch.randint(0, 5, (), generator=generator)), 2), generator=generator)
            boxes = torch.cat([corners, corners + torch.randint(5, 30, corners.shape, generator=generator)], 1)
            picked = (
                boxes[
                    torch.randint(
                        0, max(len(boxes), 1), (int(torch.randint(0, 8, (), generator=generator)),), generator=generator
                    )
                ]
                if len(boxes)
                else torch.zeros(0, 4, dtype=torch.int64)
            )
            moved = picked + torch.randint(-5, 6, picked.shape, generator=generator)
            moved[:, 2:] = torch.maximum(moved[:, 2:], moved[:, :2] + 1)
            scores = torch.randint(1, 6, (len(moved),), generator=generator) / 5  # ties
            objects.append([tuple(b) for b in boxes.tolist()])
            detections.append(list(zip(map(tuple, moved.tolist()), scores.tolist())))
        iou_threshold = (0.5, 0.3, 0.75)[trial % 3]
        expected = coco_average_precision(objects, detections, iou_threshold)
        got = course_average_precision(objects, detections, iou_threshold)
        assert got == pytest.approx(expected, abs=1e-12), f"trial {trial}: {objects}, {detections}"


def test_map_is_the_mean_of_each_class_average_precision():
    """coco_map's mask and box mAP@0.5 are class_scores_and_ious + average_precision, averaged over classes."""
    torch.manual_seed(0)
    targets, predictions = [], []
    for seed in range(4):
        _, truth = data.make_scene(seed, 64, classes=data.CLASSES[1:])
        shifted = truth["masks"].roll(int(seed % 3), dims=-1)  # some masks move off their objects
        predictions.append(
            {
                "boxes": truth["boxes"] + torch.randint(-3, 4, truth["boxes"].shape),
                "labels": truth["labels"],
                "scores": torch.rand(len(truth["labels"])),
                "masks": 0.9 * shifted[:, None].float(),
            }
        )
        targets.append(truth)
    figures = evaluation.coco_map(predictions, targets)
    classes = sorted({int(label) for t in targets for label in t["labels"]})
    for kind in ("mask", "box"):
        per_class = [
            evaluation.average_precision(*evaluation.class_scores_and_ious(predictions, targets, c, kind))
            for c in classes
        ]
        assert sum(per_class) / len(per_class) == pytest.approx(figures[f"{kind}_map50"], abs=1e-9)


def test_precision_recall_curve_and_bad_input():
    recall, precision, scores = evaluation.precision_recall_curve(
        [torch.tensor([0.9, 0.3, 0.6], dtype=torch.float64)], [torch.tensor([[0.8, 0.0], [0.0, 0.9], [0.1, 0.2]])]
    )
    assert scores.tolist() == [0.9, 0.6, 0.3]  # ranked by score: found, missed, found
    assert recall.tolist() == [0.5, 0.5, 1.0] and precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    with pytest.raises(ValueError, match="expected \\[T, G\\], one row per detection"):
        evaluation.average_precision([torch.ones(2)], [torch.ones(3, 1)])
    with pytest.raises(ValueError, match="1 score tensors for 2 IoU matrices"):
        evaluation.average_precision([torch.ones(2)], [torch.ones(2, 1)] * 2)
    with pytest.raises(ValueError, match="COCO counts only the 100 highest-scored"):
        evaluation.average_precision([torch.ones(101)], [torch.ones(101, 1)])
    crowd = dict(target((A, 1)), iscrowd=torch.ones(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="crowd regions"):
        evaluation.class_scores_and_ious([prediction((A, 1, 0.9))], [crowd], 1)
