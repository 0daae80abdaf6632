"""mrcnn_course.teaching.grading.exercises_training: average_precision (lesson 07a), checked against
evaluation.average_precision (itself equal to pycocotools, tests/training/test_evaluation.py), and the capstone's
train_step, checked by what a step leaves behind (the losses it returns, the weights after it) against the
reference step on copies of a tiny model."""

import pytest
import torch

from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading.exercises_training import tiny_model
from mrcnn_course.teaching.grading.judge import build_cases
from mrcnn_course.training import evaluation
from mrcnn_course.training.training_step import train_step as reference_train_step

AVERAGE_PRECISION = grading.HELPER_EXERCISES["average_precision"]
TRAIN_STEP = grading.HELPER_EXERCISES["train_step"]


def average_precision(scores, ious, iou_threshold):
    """A learner's answer, from scratch, in float32 and returning a tensor."""
    objects = sum(i.shape[1] for i in ious)
    if objects == 0:
        return torch.tensor(-1.0)
    found = []
    for image_scores, image_ious in zip(scores, ious):
        claimed = torch.zeros(image_ious.shape[1], dtype=torch.bool)
        hit = torch.zeros(len(image_scores), dtype=torch.bool)
        for d in image_scores.argsort(descending=True, stable=True).tolist():
            candidates = image_ious[d].float().masked_fill(claimed, -1)
            if len(candidates) and candidates.max() >= iou_threshold:
                claimed[candidates.argmax()] = hit[d] = True
        found.append(hit)
    ranking = torch.cat(scores).argsort(descending=True, stable=True)
    true_positives = torch.cat(found)[ranking].float().cumsum(0)
    recall = true_positives / objects
    precision = (true_positives / torch.arange(1, len(ranking) + 1)).flip(0).cummax(0).values.flip(0)
    levels = torch.arange(101, dtype=torch.float64) * 0.01
    first = torch.searchsorted(recall.double(), levels)
    return torch.stack([precision[i] if i < len(precision) else torch.tensor(0.0) for i in first]).mean()


def test_a_right_answer_passes_whether_it_returns_a_float_or_a_tensor(capsys):
    cases = build_cases(AVERAGE_PRECISION, extra=True)
    grading.check_average_precision(average_precision, extra=True)
    assert f"average_precision: {len(cases)} cases passed, {sum(c.extra for c in cases)} of them hidden" in (
        capsys.readouterr().out
    )

    def as_float(scores, ious, iou_threshold):
        return float(average_precision(scores, ious, iou_threshold))

    grading.check_average_precision(as_float, extra=True)
    assert AVERAGE_PRECISION.reference is evaluation.average_precision


def test_an_answer_of_the_wrong_kind_is_explained():
    def a_list(scores, ious, iou_threshold):
        return [0.5]

    with pytest.raises(AssertionError, match="expected a tensor, got list"):
        grading.check_average_precision(a_list)

    def no_return(scores, ious, iou_threshold):
        torch.cat(scores)

    with pytest.raises(AssertionError, match="did you forget the `return` statement"):
        grading.check_average_precision(no_return)


def train_step(model, optimizer, images, targets):
    """A learner's step, written differently from the reference: the parts summed in another order."""
    losses = model(images, targets)
    total = sum(losses[name] for name in sorted(losses, reverse=True))
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return {"total": total.item(), **{name: value.item() for name, value in losses.items()}}


def test_a_right_step_passes_and_the_reference_is_a_real_step(capsys):
    grading.check_train_step(train_step, extra=True)
    assert "train_step: 5 cases passed, 2 of them hidden" in capsys.readouterr().out
    assert grading.passed("train_step") is train_step

    torch.manual_seed(0)
    model = tiny_model().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 20:50] = 1
    target = {"boxes": torch.tensor([[20.0, 10, 50, 40]]), "labels": torch.tensor([1]), "masks": masks}
    losses = reference_train_step(model, optimizer, [torch.rand(3, 64, 64)], [target])
    assert set(losses) == {
        "total",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
    } and all(isinstance(v, float) for v in losses.values())
    assert losses["total"] == pytest.approx(sum(v for k, v in losses.items() if k != "total"), rel=1e-5)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("mistake", TRAIN_STEP.mistakes, ids=lambda m: m.hint[:30])
def test_each_usual_mistake_is_caught_with_its_hint(mistake, as_learner):
    with pytest.raises(AssertionError) as failure:
        grading.check_train_step(as_learner(mistake.answer))
    message = " ".join(str(failure.value).split())  # its lines are wrapped
    assert "your answer is what" in message and " ".join(mistake.hint.split()) in message


def test_a_step_that_crashes_points_at_the_learners_line():
    def train_step(model, optimizer, images, targets):
        losses = model(images)  # the targets were forgotten: the model is in training mode
        return losses

    with pytest.raises(AssertionError) as failure:
        grading.check_train_step(train_step)
    message = str(failure.value)
    assert "case 'one image, SGD' failed" in " ".join(message.split()) and "your train_step raised" in message
    assert "losses = model(images)" in message


def test_a_step_that_returns_nothing_is_asked_about_its_return():
    def train_step(model, optimizer, images, targets):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with pytest.raises(AssertionError, match="did you forget the `return` statement"):
        grading.check_train_step(train_step)
