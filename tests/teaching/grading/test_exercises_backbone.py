"""mrcnn_course.teaching.grading.exercises_backbone: what is particular to the residual block exercise
(test_exercise.py, test_visible_cases.py and test_judge.py cover every exercise's cases, catalogue and verdicts):
one function for both kinds of block, which the small model runs, and plug_into_model names what it compared."""

import pytest
import torch
import torch.nn.functional as F
from conftest import words

from mrcnn_course.model import backbone
from mrcnn_course.model.backbone import ResNetBody, ResNetConfig
from mrcnn_course.teaching import grading
from mrcnn_course.training.pretrained import load_pretrained_small
from mrcnn_course.training.recipe import Recipe, recipe_scenes


def residual_block(block, x):
    """As a learner writes it: both kinds of block."""
    out = F.relu(block.bn1(block.conv1(x)))
    if isinstance(block, backbone.Bottleneck):
        out = block.bn3(block.conv3(F.relu(block.bn2(block.conv2(out)))))
    else:
        out = block.bn2(block.conv2(out))
    return F.relu(out + (x if block.downsample is None else block.downsample(x)))


def bottleneck_only(block, x):
    """Last lesson's exercise: a bottleneck's forward, which a basic block (no conv3) cannot run."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn3(block.conv3(F.relu(block.bn2(block.conv2(out)))))
    return F.relu(out + (x if block.downsample is None else block.downsample(x)))


def test_the_learners_block_runs_in_the_small_model_with_the_same_detections_and_losses(capsys):
    grading.check_residual_block(residual_block)
    model = load_pretrained_small()
    images, targets = zip(*(recipe_scenes(Recipe(), 0, 2)[i] for i in range(2)))
    grading.plug_into_model(model, list(images), residual_block=residual_block)
    grading.plug_into_model(model, list(images), targets=list(targets), residual_block=residual_block)
    printed = words(capsys.readouterr().out)
    assert "inference (detections), with your residual_block: same output as the reference: yes" in printed
    assert "training (losses), with your residual_block: same output as the reference: yes" in printed


def test_a_resnet_body_gives_no_detections_and_plug_into_model_does_not_claim_any(capsys):
    grading.check_residual_block(residual_block)
    body = ResNetBody(ResNetConfig()).eval()  # ResNet-50's bottlenecks: C2..C5, feature maps
    maps = grading.plug_into_model(body, torch.randn(1, 3, 64, 64), residual_block=residual_block)
    assert [m.shape[1] for m in maps] == [256, 512, 1024, 2048]
    printed = words(capsys.readouterr().out)
    assert "inference, with your residual_block: same output as the reference: yes" in printed
    assert "detections" not in printed.split("cases passed")[-1]


def test_a_bottleneck_only_answer_fails_on_the_basic_block_case():
    with pytest.raises(AssertionError) as failure:
        grading.check_residual_block(bottleneck_only)
    message = words(str(failure.value))
    assert "case 'BasicBlock" in message and "raised AttributeError" in message and "conv3" in message
