"""mrcnn_course.teaching.grading.exercises_mask_head: what is particular to the mask head's module exercises
(test_exercise.py, test_visible_cases.py and test_judge.py cover every exercise's cases, catalogue and verdicts):
a learner's class passes, runs in the model with the same detections and losses, and is saved and loaded back."""

import pytest
import torch
import torch.nn.functional as F
from conftest import words

from mrcnn_course.model import components, mask_head
from mrcnn_course.teaching import grading
from mrcnn_course.training.pretrained import load_pretrained_small
from mrcnn_course.training.recipe import Recipe, recipe_scenes


class LearnersHead(mask_head.MaskRCNNHeads):
    def forward(self, features):
        for conv in self.convs:
            features = F.relu(conv(features))
        return features


class LearnersPredictor(mask_head.MaskRCNNPredictor):
    def forward(self, x):
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


class InheritsTheForward(mask_head.MaskRCNNHeads):
    """A learner who wrote nothing: the forward is the package's."""


class SequentialForward(mask_head.MaskRCNNHeads):
    """nn.Sequential's forward runs the convolutions only: the ReLUs are the learner's to apply."""

    def forward(self, features):
        return torch.nn.Sequential.forward(self, features)


class SigmoidAtTheEnd(mask_head.MaskRCNNPredictor):
    def forward(self, x):
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x))).sigmoid()


def test_the_learners_classes_pass_and_give_the_same_detections_and_losses(capsys):
    grading.check_maskrcnn_heads(LearnersHead)
    grading.check_maskrcnn_predictor(LearnersPredictor)
    assert grading.passed("maskrcnn_heads") is LearnersHead.forward
    assert "maskrcnn_predictor: 4 cases passed" in capsys.readouterr().out
    model = load_pretrained_small()  # trained: it detects, so the mask head runs on its detections
    scenes = recipe_scenes(Recipe(), 0, 2)
    images, targets = zip(*(scenes[i] for i in range(2)))
    mine = {"maskrcnn_heads": LearnersHead, "maskrcnn_predictor": LearnersPredictor}
    detections = grading.plug_into_model(model, list(images), **mine)
    grading.plug_into_model(model, list(images), targets=list(targets), **mine)
    assert all(len(d["masks"]) for d in detections)
    printed = " ".join(capsys.readouterr().out.split())
    yours = "with your maskrcnn_heads, maskrcnn_predictor: same output as the reference: yes"
    assert f"inference (detections), {yours}" in printed and f"training (losses), {yours}" in printed


def test_the_function_passes_as_well_as_the_class(as_learner):
    grading.check_maskrcnn_heads(as_learner(mask_head.maskrcnn_heads), extra=True)
    grading.check_maskrcnn_predictor(LearnersPredictor(4, 4, 2), extra=True)  # an instance: its class's forward


@pytest.mark.parametrize(
    "cls, check, hint",
    [
        (InheritsTheForward, grading.check_maskrcnn_heads, "write your own maskrcnn_heads"),
        (SequentialForward, grading.check_maskrcnn_heads, "a ReLU follows every convolution"),
        (SigmoidAtTheEnd, grading.check_maskrcnn_predictor, "no sigmoid"),
    ],
)
def test_a_wrong_class_fails_with_the_reason(cls, check, hint):
    with pytest.raises(AssertionError) as failure:
        check(cls)
    assert hint in words(str(failure.value))


def test_a_saved_class_loads_back_as_its_forward(course_home, as_learner):
    grading.check_maskrcnn_heads(LearnersHead)
    grading.save_component("maskrcnn_heads", LearnersHead)
    assert (course_home / "components" / "maskrcnn_heads.py").is_file()
    loaded = grading.load_components(("maskrcnn_heads",))
    assert "maskrcnn_heads" in loaded, loaded.report()
    head = mask_head.MaskRCNNHeads(4, (4, 4))
    x = torch.randn(3, 4, 14, 14)
    torch.testing.assert_close(loaded["maskrcnn_heads"](head, x), mask_head.maskrcnn_heads(head, x))
    with components.using(**loaded):
        torch.testing.assert_close(head(x), mask_head.maskrcnn_heads(head, x))
