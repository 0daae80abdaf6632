"""mrcnn_course.teaching.quiz: keys that check an answer without showing it, and the facts the quizzes state.

The second half recomputes, with the package, the numbers that quiz questions and explanations
quote (sizes, anchor counts, levels, deltas), so a quiz cannot drift from the model. About 2 s.
"""

import math

import pytest
import torch

from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.input_image import IMAGENET_MEAN, IMAGENET_STD, ImageList, batch_images, resize, resize_boxes
from mrcnn_course.model.roi_align import map_levels, roi_align
from mrcnn_course.model.rpn import AnchorGenerator
from mrcnn_course.teaching import quiz

WHY = "RoI Pool rounds coordinates to the feature grid — RoI Align does not (×2 sampling)."


def test_key_accepts_the_right_letter_only():
    key = quiz.key("B", WHY)
    assert quiz.is_right("B", key)
    assert quiz.is_right(" b ", key)  # case and spaces do not matter
    for wrong in ("A", "C", "D", "E", "", None, 2, ["B"]):
        assert not quiz.is_right(wrong, key)


def test_key_hides_the_letter_and_the_explanation():
    key = quiz.key("B", WHY)
    assert "RoI" not in key and "Pool" not in key and '"B"' not in key
    assert quiz.explanation("B", key) == WHY  # unicode survives
    assert quiz.explanation("A", key) is None


def test_key_is_deterministic_and_differs_by_answer():
    assert quiz.key("C", WHY) == quiz.key("C", WHY)  # the release is reproducible byte for byte
    assert quiz.key("C", WHY) != quiz.key("D", WHY)


def test_key_rejects_bad_input():
    with pytest.raises(ValueError, match="one of A, B, C, D"):
        quiz.key("c", WHY)
    with pytest.raises(ValueError, match="explanation"):
        quiz.key("C", "  ")
    with pytest.raises(ValueError, match="not a quiz key"):
        quiz.is_right("C", "C")


def test_check_explains_a_right_answer(capsys):
    quiz.check("q1", "b", quiz.key("B", WHY))
    out = capsys.readouterr().out
    assert '✓ q1 = "B" is right.' in out and "RoI Pool rounds" in out


def test_check_does_not_reveal_after_a_wrong_answer(capsys):
    quiz.check("q1", "A", quiz.key("B", WHY))  # a wrong letter is feedback, not an error
    out = capsys.readouterr().out
    assert '✗ q1 = "A" is not the right answer' in out
    assert "RoI Pool" not in out and '"B"' not in out


@pytest.mark.parametrize(
    "answer, message",
    [
        (None, 'q3 is still None: set q3 = "A", "B", "C" or "D"'),
        (3, "q3 is 3 (int)"),
        ("E", "q3 is 'E' (str)"),
    ],
)
def test_check_format_errors_say_what_to_do(answer, message):
    with pytest.raises(AssertionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quiz.check("q3", answer, quiz.key("B", WHY))


# ---- the facts the quizzes quote, recomputed with the package ------------------------------------


def test_quiz_01_resize_and_padding_sizes():
    image, _ = resize(torch.zeros(3, 480, 640), 800, 1333)
    assert tuple(image.shape[-2:]) == (800, 1066)
    assert tuple(batch_images([image]).shape[-2:]) == (800, 1088)
    panorama, _ = resize(torch.zeros(3, 200, 2000), 800, 1333)
    assert tuple(panorama.shape[-2:]) == (133, 1333)


def test_quiz_01_box_mapped_back():
    box = resize_boxes(torch.tensor([[100.0, 50, 300, 250]]), (800, 1066), (480, 640))
    assert torch.allclose(box, torch.tensor([[60.04, 30.0, 180.11, 150.0]]), atol=0.01)


def test_quiz_01_zero_padding_is_the_mean_and_black_is_about_minus_two():
    black = [(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert all(-2.2 < b < -1.7 for b in black)


def test_quiz_03_anchor_count_for_800_pixels():
    sizes = (200, 100, 50, 25, 13)  # P2..P6 of an 800x800 image (P6 = P5 subsampled: 25 -> 13)
    generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    maps = [torch.zeros(1, 1, s, s) for s in sizes]
    anchors = generator(ImageList(torch.zeros(1, 3, 800, 800), [(800, 800)]), maps)[0]
    assert len(anchors) == 159_882 == 3 * 53_294


def test_quiz_03_delta_decoding():
    anchor = torch.tensor([[68.0, 68, 132, 132]])  # 64 px wide, centred at x = 100
    box = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.tensor([[0.5, 0.0, math.log(2), 0.0]]), [anchor])[0, 0]
    assert ((box[0] + box[2]) / 2).item() == pytest.approx(132) and (box[2] - box[0]).item() == pytest.approx(128)


def test_quiz_04_level_assignment():
    boxes = torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448]])
    assert (map_levels([boxes], 2, 5) + 2).tolist() == [4, 3, 5]


def test_quiz_04_bilinear_weights_at_2_25():
    row = torch.tensor([0.0, 0, 10, 20, 0, 0]).view(1, 1, 1, 6)  # cell 2 = 10, cell 3 = 20
    # a box whose single 1x1 bin has its single sampling point at x = 2.25, y = 0.5 (the row itself)
    value = roi_align(row.expand(1, 1, 2, 6).contiguous(), torch.tensor([[0, 1.75, 0.0, 2.75, 1.0]]), 1, 1.0, 1)
    assert value.item() == pytest.approx(0.75 * 10 + 0.25 * 20)
