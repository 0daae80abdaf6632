"""mrcnn_course.teaching.grading.exercises_box_head: what is particular to the box head's exercises (test_exercise.py,
test_visible_cases.py and test_judge.py cover every exercise's cases, catalogue and verdicts): the module exercises
take a learner's class, the training samples are compared on what the model reads and drawn from the case's
generator."""

import pytest
import torch
import torch.nn.functional as F
from conftest import words

from mrcnn_course.model import box_head, components
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.model.matching import Matcher
from mrcnn_course.teaching import grading
from mrcnn_course.training import data


class LearnersHead(box_head.TwoMLPHead):
    def forward(self, x):
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))


class InheritsTheForward(box_head.TwoMLPHead):
    """A learner who wrote nothing: the forward is the package's."""


class CallsSuper(box_head.TwoMLPHead):
    def forward(self, x):
        return super().forward(x)


class ViewsTheRoIs(box_head.TwoMLPHead):
    def forward(self, x):
        return F.relu(self.fc7(F.relu(self.fc6(x.view(x.shape[0], -1)))))  # fails on 0 RoIs


class LearnersPredictor(box_head.FastRCNNPredictor):
    def forward(self, x):
        x = x.reshape(len(x), -1)
        return self.cls_score(x), self.bbox_pred(x)


def test_a_module_exercise_takes_the_learners_class_and_plugs_it_into_the_model(capsys):
    grading.check_two_mlp_head(LearnersHead)
    grading.check_fastrcnn_predictor(LearnersPredictor)
    assert grading.passed("two_mlp_head") is LearnersHead.forward
    assert "two_mlp_head: 3 cases passed" in capsys.readouterr().out
    head = box_head.TwoMLPHead(8 * 7 * 7, 16)
    x = torch.randn(5, 8, 7, 7)
    with components.using(two_mlp_head=LearnersHead.forward):
        torch.testing.assert_close(head(x), box_head.two_mlp_head(head, x))  # the model's class runs the learner's


@pytest.mark.parametrize("cls", [InheritsTheForward, CallsSuper])
def test_the_packages_forward_does_not_pass_as_the_learners(cls):
    with pytest.raises(AssertionError):
        grading.check_two_mlp_head(cls)
    assert grading.passed("two_mlp_head") is not cls.forward


def test_view_fails_on_an_image_without_rois_with_the_exercises_hint():
    with pytest.raises(AssertionError) as failure:
        grading.check_two_mlp_head(ViewsTheRoIs)
    message = words(str(failure.value))
    assert "case 'no RoIs" in message and "raised RuntimeError" in message and "x.flatten(start_dim=1)" in message


def samples_as_a_learner_may_write_them(proposals, targets, matcher, sampler, box_coder, generator=None, *, draw=True):
    """Right where the model reads the samples; the raw codes as indices and zero targets for background RoIs,
    which nothing reads. draw=False: the sampler draws from torch's default generator, not the case's."""
    all_rois, all_codes, all_labels = [], [], []
    for image_proposals, target in zip(proposals, targets):
        rois = torch.cat([image_proposals, target["boxes"]])
        codes = torch.full((len(rois),), Matcher.BELOW_LOW_THRESHOLD)
        if len(target["boxes"]):
            codes = matcher(components.box_iou(target["boxes"], rois))
        labels = torch.where(codes >= 0, target["labels"][codes.clamp(min=0)] if len(target["boxes"]) else 0, 0)
        labels[codes == Matcher.BETWEEN_THRESHOLDS] = -1
        all_rois.append(rois)
        all_codes.append(codes)
        all_labels.append(labels)
    positives, negatives = sampler(all_labels, generator if draw else None)
    chosen = [torch.where(p | n)[0] for p, n in zip(positives, negatives)]
    rois = [r[c] for r, c in zip(all_rois, chosen)]
    codes = [k[c] for k, c in zip(all_codes, chosen)]
    labels = [l[c] for l, c in zip(all_labels, chosen)]
    targets_out = []
    for target, image_rois, image_codes, image_labels in zip(targets, rois, codes, labels):
        deltas = torch.zeros(len(image_rois), 4)
        positive = image_labels > 0
        if positive.any():
            deltas[positive] = box_coder.encode([target["boxes"][image_codes[positive]]], [image_rois[positive]])[0]
        targets_out.append(deltas)
    return rois, codes, labels, targets_out


def test_background_rois_indices_and_targets_are_not_compared(capsys):
    grading.check_select_training_samples(samples_as_a_learner_may_write_them, extra=True)
    assert "select_training_samples: 9 cases passed, 4 of them hidden" in capsys.readouterr().out


def test_the_sample_is_drawn_from_the_cases_generator():
    def ignores_the_generator(*args):
        return samples_as_a_learner_may_write_them(*args, draw=False)

    with pytest.raises(AssertionError) as failure:
        grading.check_select_training_samples(ignores_the_generator)
    assert "sampler(all labels, generator)" in words(str(failure.value))


def test_plugged_into_the_model_the_learners_box_head_gives_the_same_losses_and_detections(capsys):
    grading.check_two_mlp_head(LearnersHead)
    grading.check_fastrcnn_predictor(LearnersPredictor)
    grading.check_select_training_samples(samples_as_a_learner_may_write_them)
    capsys.readouterr()
    torch.manual_seed(0)
    model = maskrcnn_small()
    image, target = data.make_scene(seed=3, image_size=96, classes=data.CLASSES[1:])
    mine = {"two_mlp_head": LearnersHead, "fastrcnn_predictor": LearnersPredictor}
    grading.plug_into_model(
        model, [image], targets=[target], select_training_samples=samples_as_a_learner_may_write_them, **mine
    )
    grading.plug_into_model(model, [image], **mine)
    printed = capsys.readouterr().out
    assert (
        "training (losses), with your select_training_samples, two_mlp_head, fastrcnn_predictor: "
        "same output as the reference: yes" in printed
    )
    assert (
        "inference (detections), with your two_mlp_head, fastrcnn_predictor: same output as the reference: yes"
        in printed
    )
