"""mrcnn_course.grading.checks_roi_align: bilinear_interpolate, a helper exercise that is not a component
(tests/test_grading.py covers roi_align and map_levels with every other component's exercise)."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision

from mrcnn_course import components, grading
from mrcnn_course.grading.checks_roi_align import BILINEAR_INTERPOLATE, reference_bilinear
from mrcnn_course.grading.core import build_cases, difference


@pytest.fixture(autouse=True)
def clean_components():
    components.reset()
    yield
    components.reset()


def test_the_reference_is_bilinear_interpolation_inside_the_map():
    """Second opinion: inside the map, grid_sample (align_corners=True: cell j sits at coordinate j) agrees."""
    feature = torch.randn(3, 6, 9)
    y, x = torch.rand(50) * 5, torch.rand(50) * 8
    grid = torch.stack([x / 8 * 2 - 1, y / 5 * 2 - 1], dim=-1)[None, None]  # (1, 1, P, 2), in [-1, 1]
    expected = F.grid_sample(feature[None], grid, mode="bilinear", align_corners=True)[0, :, 0]  # (C, P)
    torch.testing.assert_close(reference_bilinear(feature, y, x), expected, atol=1e-5, rtol=1e-5)


def test_the_reference_follows_torchvisions_rules_at_the_border():
    feature = torch.randn(2, 4, 5)
    y = torch.tensor([-1.5, -1.0, -0.5, 3.5, 4.0, 4.5, 2.0])
    x = torch.tensor([1.0, 2.0, 3.0, 4.5, 5.0, 1.0, -1.25])
    got = reference_bilinear(feature, y, x)
    assert got[:, [0, 5, 6]].abs().max() == 0  # outside [-1, H] x [-1, W]
    torch.testing.assert_close(got[:, 1], feature[:, 0, 2])  # y = -1 reads the first row
    torch.testing.assert_close(got[:, 2], feature[:, 0, 3])
    torch.testing.assert_close(got[:, 3], feature[:, 3, 4])  # beyond the last row and column: the last cell
    theirs = torchvision.ops.roi_align(feature[None], torch.stack([torch.zeros(7), x - 0.5, y - 0.5, x + 0.5, y + 0.5],
                                                                  dim=1), 1, 1.0, 1, False)[:, :, 0, 0].T
    torch.testing.assert_close(got, theirs)


def bilinear_interpolate(feature, y, x):
    """A learner's answer, from scratch (the reference reads through roi_align, switched off in the check)."""
    height, width = feature.shape[-2:]
    outside = (y < -1) | (y > height) | (x < -1) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long().clamp(max=height - 1), x.floor().long().clamp(max=width - 1)
    y_high, x_high = (y_low + 1).clamp(max=height - 1), (x_low + 1).clamp(max=width - 1)
    ly, lx = (y - y_low).clamp(max=1) * (y_low < height - 1), (x - x_low).clamp(max=1) * (x_low < width - 1)
    hy, hx = 1 - ly, 1 - lx
    value = (hy * hx * feature[:, y_low, x_low] + hy * lx * feature[:, y_low, x_high]
             + ly * hx * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])
    return value * ~outside


def test_a_right_answer_passes_and_every_roi_align_is_switched_off(capsys):
    hidden = [c for c in build_cases(BILINEAR_INTERPOLATE, extra=True) if c.extra]
    grading.check_bilinear_interpolate(bilinear_interpolate, extra=True)
    assert f"{len(build_cases(BILINEAR_INTERPOLATE, extra=True))} cases passed, {len(hidden)} of them hidden" in \
        capsys.readouterr().out

    def calls_torchvision(feature, y, x):
        return torchvision.ops.roi_align(feature[None], torch.zeros(1, 5), 1)

    with pytest.raises(AssertionError, match="torchvision.ops.roi_align is switched off while check_bilinear"):
        grading.check_bilinear_interpolate(calls_torchvision)
    assert components.active("roi_align") == "own" and torchvision.ops.roi_align.__name__ == "roi_align"


def test_each_usual_mistake_is_caught_with_its_hint():
    cases = build_cases(BILINEAR_INTERPOLATE, extra=True)
    for mistake in BILINEAR_INTERPOLATE.mistakes:
        answers = []
        for case in cases:
            right = reference_bilinear(*copy.deepcopy(case.args))
            wrong = mistake.answer(*copy.deepcopy(case.args))
            answers.append((right, wrong))
        assert any(difference(r, w, 1e-5, 1e-4) for r, w in answers), mistake.hint
        replies = iter(w for _, w in answers)
        with pytest.raises(AssertionError) as failure:
            grading.check_bilinear_interpolate(lambda feature, y, x: next(replies), extra=True)
        assert mistake.hint in str(failure.value)
