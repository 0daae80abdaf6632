"""evaluation: COCO mAP on hand-made cases with known answers, detection accuracy, evaluate on a model.
Also bad input: targets that are all crowd regions leave mAP undefined.
"""

import re

import pytest
import torch
from torch import nn

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


def maps(value: float) -> dict:
    return dict.fromkeys(evaluation.MAP_NAMES, pytest.approx(value))


def test_perfect_predictions_score_one():
    targets = [target((A, 1), (B, 2)), target((C, 3))]
    predictions = [prediction((A, 1, 0.9), (B, 2, 0.8)), prediction((C, 3, 0.7))]
    assert evaluation.coco_map(predictions, targets) == maps(1.0)
    assert evaluation.detection_accuracy(predictions, targets) == 1.0


def test_one_of_two_objects_found():
    same_class = [target((A, 1), (B, 1))]
    found_a = [prediction((A, 1, 0.9))]
    assert evaluation.coco_map(found_a, same_class) == maps(ONE_OF_TWO)
    assert evaluation.detection_accuracy(found_a, same_class) == 0.5
    two_classes = [target((A, 1), (B, 2))]
    assert evaluation.coco_map(found_a, two_classes) == maps(0.5)  # AP 1 for class 1, 0 for class 2


def test_the_wrong_class_finds_nothing():
    targets = [target((A, 1))]
    predictions = [prediction((A, 2, 0.99))]
    assert evaluation.coco_map(predictions, targets) == maps(0.0)
    assert evaluation.detection_accuracy(predictions, targets) == 0.0


def test_no_predictions_at_all_score_zero():
    targets = [target((A, 1)), target((B, 2))]
    assert evaluation.coco_map([prediction(), prediction()], targets) == maps(0.0)
    assert evaluation.detection_accuracy([prediction(), prediction()], targets) == 0.0


def test_an_image_without_objects_counts_its_false_positives():
    targets = [target((A, 1)), target()]
    after = [prediction((A, 1, 0.9)), prediction((B, 1, 0.5))]  # the false positive ranks below the true one
    assert evaluation.coco_map(after, targets) == maps(1.0)
    before = [prediction((A, 1, 0.5)), prediction((B, 1, 0.9))]  # precision 1/2 when recall reaches 1
    assert evaluation.coco_map(before, targets) == maps(0.5)
    assert evaluation.detection_accuracy(before, targets) == 1.0  # accuracy only counts objects found


def test_boxes_and_masks_are_measured_apart():
    targets = [target((A, 1))]
    x1, y1, x2, y2 = A
    thin = mask(x1, y1, x1 + 2, y2).float()  # the right box, but a mask of a fifth of the object
    predictions = [prediction((A, 1, 0.9), masks=[thin])]
    result = evaluation.coco_map(predictions, targets)
    assert result["box_map"] == pytest.approx(1.0) and result["mask_map"] == pytest.approx(0.0)
    assert evaluation.detection_accuracy(predictions, targets) == 0.0  # accuracy uses the masks


def test_predicted_masks_are_thresholded_at_one_half():
    targets = [target((A, 1))]
    faint = [prediction((A, 1, 0.9), masks=[0.5 * mask(*A).float()])]  # 0.5 is not above 0.5: an empty mask
    assert evaluation.coco_map(faint, targets)["mask_map"] == pytest.approx(0.0)
    assert evaluation.detection_accuracy(faint, targets) == 0.0


def test_accuracy_thresholds_on_iou_and_score():
    targets = [target(((0, 0, 10, 10), 1))]
    half = [prediction(((0, 0, 10, 10), 1, 0.9), masks=[mask(0, 0, 5, 10).float()])]  # mask IoU exactly 0.5
    assert evaluation.detection_accuracy(half, targets) == 1.0
    assert evaluation.detection_accuracy(half, targets, iou_threshold=0.51) == 0.0
    less = [prediction(((0, 0, 10, 10), 1, 0.9), masks=[mask(0, 0, 4, 10).float()])]  # IoU 0.4
    assert evaluation.detection_accuracy(less, targets) == 0.0
    unsure = [prediction(((0, 0, 10, 10), 1, 0.4))]
    assert evaluation.detection_accuracy(unsure, targets) == 0.0
    assert evaluation.detection_accuracy(unsure, targets, score_threshold=0.3) == 1.0


def test_accuracy_matches_each_prediction_once_greedily_by_score():
    targets = [target((A, 1), (B, 1))]
    duplicates = [prediction((A, 1, 0.9), (A, 1, 0.8))]  # two detections of one object find one object
    assert evaluation.detection_accuracy(duplicates, targets) == 0.5
    # Greedy, not the best assignment: the surer prediction claims its best object (right, IoU 0.59) though it
    # also covers the left one (IoU 0.35); the other prediction covers only the right one and finds it taken.
    left, right = (0, 0, 10, 10), (10, 0, 20, 10)
    pair = [target((left, 1), (right, 1))]
    spanning = [prediction(((3, 0, 20, 10), 1, 0.9), (right, 1, 0.6))]
    assert evaluation.detection_accuracy(spanning, pair, iou_threshold=0.3) == 0.5
    spanning_second = [prediction(((3, 0, 20, 10), 1, 0.6), (right, 1, 0.9))]
    assert evaluation.detection_accuracy(spanning_second, pair, iou_threshold=0.3) == 1.0


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
        evaluation.detection_accuracy([wrong_size], targets)
    with pytest.raises(ValueError, match="no objects at all"):
        evaluation.coco_map([prediction()], [target()])
    with pytest.raises(ValueError, match="no objects at all"):
        evaluation.detection_accuracy([prediction()], [target()])


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
    assert {k: result[k] for k in evaluation.MAP_NAMES} == maps(1.0) and result["accuracy"] == 1.0
    first = result["predictions"][0]
    assert first["masks"].dtype == torch.uint8 and first["masks"].shape[1:] == (1, 32, 32)
    assert torch.equal(first["masks"][:, 0], dataset[0][1]["masks"])  # 0.8 thresholded to 1
    with pytest.raises(ValueError, match="non-empty dataset"):
        evaluation.evaluate(oracle, [])


def test_evaluate_an_untrained_model():
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=len(data.CLASSES))
    result = evaluation.evaluate(model, data.ShapesDataset(2, 64, classes=data.CLASSES[1:]), batch_size=2)
    assert set(result) == {*evaluation.MAP_NAMES, "accuracy", "predictions"}
    assert all(0 <= result[k] <= 1 for k in (*evaluation.MAP_NAMES, "accuracy"))
    assert len(result["predictions"]) == 2
    assert result["predictions"][0]["masks"].shape[-2:] == (64, 64)


def test_every_object_a_crowd_region_makes_map_undefined_not_minus_one():
    image, truth = data.make_scene(3, 64)
    truth["iscrowd"] = torch.ones_like(truth["iscrowd"])
    prediction = {**truth, "scores": torch.ones(len(truth["labels"])), "masks": truth["masks"][:, None].float()}
    with pytest.raises(ValueError, match=re.escape("every object of the targets is a crowd region (iscrowd=1)")):
        evaluation.coco_map([prediction], [truth])
