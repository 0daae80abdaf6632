"""mrcnn_course.teaching.grading.exercises_roi_align: interpolation_weights, a helper exercise that is not a component,
and lesson 04's text for roi_align_fast (tests/teaching/grading/test_exercise.py covers roi_align, roi_align_fast and
map_levels with every other component's exercise, and interpolation_weights' usual mistakes with every exercise's)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mrcnn_course.model import components
from mrcnn_course.teaching import grading
from mrcnn_course.teaching.grading.exercises_roi_align import reference_interpolation_weights
from mrcnn_course.teaching.grading.judge import build_cases

INTERPOLATION_WEIGHTS = grading.HELPER_EXERCISES["interpolation_weights"]


def bilinear(feature, y, x):
    """Tensor[C, H, W] read at points (y, x), each Tensor[P], -> Tensor[C, P]: the row weights times the
    column weights, as lesson 04 assembles bilinear interpolation."""
    rows = reference_interpolation_weights(y, feature.shape[1])  # (P, H)
    cols = reference_interpolation_weights(x, feature.shape[2])  # (P, W)
    return torch.einsum("ph,chw,pw->cp", rows, feature, cols)


def test_the_reference_makes_bilinear_interpolation_inside_the_map():
    """Second opinion: inside the map, grid_sample (align_corners=True: cell j sits at coordinate j) agrees."""
    feature = torch.randn(3, 6, 9)
    y, x = torch.rand(50) * 5, torch.rand(50) * 8
    grid = torch.stack([x / 8 * 2 - 1, y / 5 * 2 - 1], dim=-1)[None, None]  # (1, 1, P, 2), in [-1, 1]
    expected = F.grid_sample(feature[None], grid, mode="bilinear", align_corners=True)[0, :, 0]  # (C, P)
    torch.testing.assert_close(bilinear(feature, y, x), expected, atol=1e-5, rtol=1e-5)


def test_the_reference_follows_torchvisions_rules_at_the_border():
    feature = torch.randn(2, 4, 5)
    y = torch.tensor([-1.5, -1.0, -0.5, 3.5, 4.0, 4.5, 2.0])
    x = torch.tensor([1.0, 2.0, 3.0, 4.5, 5.0, 1.0, -1.25])
    got = bilinear(feature, y, x)
    assert got[:, [0, 5, 6]].abs().max() == 0  # outside [-1, H] x [-1, W]
    torch.testing.assert_close(got[:, 1], feature[:, 0, 2])  # y = -1 reads the first row
    torch.testing.assert_close(got[:, 3], feature[:, 3, 4])  # past the last row and column: the last cell
    one_point_boxes = torch.stack([torch.zeros(7), x - 0.5, y - 0.5, x + 0.5, y + 0.5], dim=1)
    theirs = torchvision.ops.roi_align(feature[None], one_point_boxes, 1, 1.0, 1, False)[:, :, 0, 0].T
    torch.testing.assert_close(got, theirs)


def interpolation_weights(coords, length):
    """A learner's answer, from scratch."""
    outside = (coords < -1) | (coords > length)
    coords = coords.clamp(min=0, max=length - 1)
    low = coords.floor().long()
    high = (low + 1).clamp(max=length - 1)
    t = coords - low
    return (F.one_hot(low, length) * (1 - t)[..., None] + F.one_hot(high, length) * t[..., None]) * ~outside[..., None]


def test_a_right_answer_passes_and_every_roi_align_is_switched_off(capsys):
    cases = build_cases(INTERPOLATION_WEIGHTS, extra=True)
    grading.check_interpolation_weights(interpolation_weights, extra=True)
    assert f"{len(cases)} cases passed, {sum(c.extra for c in cases)} of them hidden" in capsys.readouterr().out

    def calls_torchvision(coords, length):
        return torchvision.ops.roi_align(torch.zeros(1, 1, 1, length), torch.zeros(1, 5), 1)

    with pytest.raises(AssertionError, match="torchvision.ops.roi_align is switched off while check_interpolation"):
        grading.check_interpolation_weights(calls_torchvision)
    assert components.active("roi_align") == "own" and torchvision.ops.roi_align.__name__ == "roi_align"


LESSON_04 = Path(__file__).resolve().parents[3] / "solutions" / "04_roi_align" / "04_roi_align.ipynb"


def test_lesson_04_leaves_the_fast_method_to_the_hints_and_its_speed_advice_agrees_with_them(capsys):
    """The lesson's text (markdown and docstrings) prescribes no method for roi_align_fast; the speed advice is the
    exercise's own first step, so it cannot contradict the hints."""
    cells = json.loads(LESSON_04.read_text())["cells"]
    text = "\n".join("".join(c["source"]).split("### BEGIN SOLUTION")[0] for c in cells)
    assert "topk" not in text and "embedding_bag" not in text and "gather the four" not in text
    fast = grading.EXERCISES["roi_align_fast"]
    assert fast.speed_advice().startswith(fast.steps[0].rstrip("."))
    grading.hint("roi_align_fast", 1)
    assert "wastes" in capsys.readouterr().out
