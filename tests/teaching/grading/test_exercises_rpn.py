"""Lesson 03b's exercises (grading.exercises_rpn and exercises_matching): rpn_head, match_boxes, sample_balanced
and rpn_loss, as a learner meets them. test_exercise.py and test_visible_cases.py cover what every exercise
shares (the reference passes, torchvision agrees, each mistake fails the visible check with its hint, and
a hidden case too)."""

import pytest
import torch
from conftest import words

from mrcnn_course.model import matching, rpn
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading.judge import build_cases


class GoodHead(rpn.RPNHead):
    """A learner's head, written as the lesson asks: a subclass whose forward uses the constructor's layers."""

    def forward(self, features):
        objectness, pred_deltas = [], []
        for feature in features:
            t = torch.relu(self.conv(feature))
            logits, deltas = self.cls_logits(t), self.bbox_pred(t)
            n, a, h, w = logits.shape
            objectness.append(logits.permute(0, 2, 3, 1).reshape(n, -1))
            pred_deltas.append(deltas.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return torch.cat(objectness, dim=1), torch.cat(pred_deltas, dim=1)


class HeadWithoutPermute(rpn.RPNHead):
    """The classic bug: a reshape where a permute is needed. Every shape is right."""

    def forward(self, features):
        objectness, pred_deltas = [], []
        for feature in features:
            t = torch.relu(self.conv(feature))
            logits, deltas = self.cls_logits(t), self.bbox_pred(t)
            objectness.append(logits.reshape(len(logits), -1))
            pred_deltas.append(deltas.permute(0, 2, 3, 1).reshape(len(deltas), -1, 4))
        return torch.cat(objectness, dim=1), torch.cat(pred_deltas, dim=1)


class HeadCallingThePackages(rpn.RPNHead):
    def forward(self, features):
        return rpn.rpn_head(self, features)


def test_the_head_is_checked_as_a_class_and_a_wrong_permute_is_named(capsys):
    grading.check_rpn_head(GoodHead, extra=True)
    assert "rpn_head: 7 cases passed, 3 of them hidden" in capsys.readouterr().out
    with pytest.raises(AssertionError) as failure:
        grading.check_rpn_head(HeadWithoutPermute)
    message = words(str(failure.value))
    assert "case 'one level, one image, 3 anchors on a 2 x 2 map' failed" in message
    assert "flattened without a permute" in message
    with pytest.raises(AssertionError, match="ran the reference|switched off"):
        grading.check_rpn_head(HeadCallingThePackages)


def test_a_sampler_that_ignores_the_generator_fails_on_its_draws():
    def sample_balanced(sampler, labels, generator):
        positive, negative = torch.where(labels >= 1)[0], torch.where(labels == 0)[0]
        num_pos = min(len(positive), int(sampler.batch_size_per_image * sampler.positive_fraction))
        num_neg = min(len(negative), sampler.batch_size_per_image - num_pos)
        pos_mask, neg_mask = torch.zeros_like(labels, dtype=torch.uint8), torch.zeros_like(labels, dtype=torch.uint8)
        pos_mask[positive[torch.randperm(len(positive))[:num_pos]]] = 1  # torch's default generator
        neg_mask[negative[torch.randperm(len(negative))[:num_neg]]] = 1
        return pos_mask, neg_mask

    with pytest.raises(AssertionError) as failure:
        grading.check_sample_balanced(sample_balanced)
    message = words(str(failure.value))
    assert "case 'RPN: 256 anchors at half positives, plenty of both' failed" in message
    assert "generator=generator" in message


def test_the_matcher_and_sampler_examples_state_their_settings():
    case = build_cases(grading.EXERCISES["match_boxes"])[2]
    assert case.notes["matcher"] == ("Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True)")
    case = build_cases(grading.EXERCISES["sample_balanced"])[1]
    assert case.notes == {
        "sampler": "BalancedPositiveNegativeSampler(batch_size_per_image=512, positive_fraction=0.25)",
        "generator": "torch.Generator().manual_seed(2)",
    }


@pytest.mark.slow
def test_the_four_plugged_into_the_model_give_the_same_detections_and_losses(capsys, as_learner):
    """What lesson 03b's last cells do, with copies of the reference as the learner's answers."""
    mine = {
        "rpn_head": as_learner(rpn.rpn_head),
        "match_boxes": as_learner(matching.match_boxes),
        "sample_balanced": as_learner(matching.sample_balanced),
        "rpn_loss": as_learner(rpn.rpn_loss),
    }
    for name, function in mine.items():
        grading.run(grading.EXERCISES[name], function, extra=True)  # no speed case: it times
    torch.manual_seed(0)
    model = maskrcnn_small(num_classes=3).eval()
    image = torch.rand(3, 96, 128)
    target = {
        "boxes": torch.tensor([[10.0, 20, 60, 70], [70, 10, 120, 50]]),
        "labels": torch.tensor([1, 2]),
        "masks": torch.zeros(2, 96, 128, dtype=torch.uint8),
    }
    target["masks"][0, 20:70, 10:60] = 1
    target["masks"][1, 10:50, 70:120] = 1
    capsys.readouterr()
    grading.plug_into_model(model, [image], **mine)
    grading.plug_into_model(model, [image], targets=[target], **mine)
    printed = capsys.readouterr().out
    assert "inference (detections), with your rpn_head, match_boxes, sample_balanced, rpn_loss: same output" in printed
    assert printed.count("same output as the reference: yes") == 2
