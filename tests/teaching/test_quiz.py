"""mrcnn_course.teaching.quiz: keys that check an answer without showing it, and the facts the quizzes state.

The second half recomputes, with the package, the numbers that quiz questions and explanations
quote (sizes, anchor counts, levels, deltas, strides, flattening order), so a quiz cannot drift from the
model. A few seconds (the R-50-FPN is built on the meta device: shapes, no weights).
"""

import math

import pytest
import torch

from mrcnn_course.model.box_ops import BoxCoder
from mrcnn_course.model.input_image import IMAGENET_MEAN, IMAGENET_STD, ImageList, batch_images, resize, resize_boxes
from mrcnn_course.model.maskrcnn import maskrcnn_resnet50_fpn
from mrcnn_course.model.roi_align import map_levels, roi_align
from mrcnn_course.model.rpn import AnchorGenerator, anchor_grid
from mrcnn_course.teaching import quiz

WHY = "RoI Pool rounds coordinates to the feature grid — RoI Align does not (×2 sampling)."
WRONG = {
    "A": "Speed is not the reason: both read every cell a box covers.",
    "C": "Both take boxes of any size and shape; they differ in where they read.",
    "D": "Neither changes the channels: both keep the 256 of the level they read.",
}


def test_key_accepts_the_right_letter_only():
    key = quiz.key("B", WHY, WRONG)
    assert quiz.is_right("B", key)
    assert quiz.is_right(" b ", key)  # case and spaces do not matter
    for wrong in ("A", "C", "D", "E", "", None, 2, ["B"]):
        assert not quiz.is_right(wrong, key)


def test_key_hides_the_letter_and_every_text():
    key = quiz.key("B", WHY, WRONG)
    assert "RoI" not in key and "Pool" not in key and '"B"' not in key and "Speed" not in key
    assert quiz.explanation("B", key) == WHY  # unicode survives
    assert quiz.explanation("A", key) is None and quiz.why_wrong("B", key) is None
    assert {letter: quiz.why_wrong(letter.lower(), key) for letter in "ACD"} == WRONG


def test_the_sealed_texts_have_one_length_so_the_longest_is_not_the_explanation():
    parts = quiz.key("B", WHY * 3, WRONG).split(".")[3:]
    assert len(parts) == 4 and len(set(map(len, parts))) == 1


def test_key_is_deterministic_and_differs_by_answer_and_by_feedback():
    reordered = {letter: WRONG[letter] for letter in "DCA"}
    assert quiz.key("B", WHY, reordered) == quiz.key("B", WHY, WRONG)  # the release is reproducible
    as_c = {"A": WRONG["A"], "B": WRONG["C"], "D": WRONG["D"]}
    assert quiz.key("C", WHY, as_c) != quiz.key("C", WHY, {**as_c, "A": "Other."})
    assert quiz.key("C", WHY, as_c) != quiz.key("D", WHY, {"A": "a", "B": "b", "C": "c"})


def test_key_rejects_bad_input():
    with pytest.raises(ValueError, match="one of A, B, C, D"):
        quiz.key("c", WHY, WRONG)
    with pytest.raises(ValueError, match="explanation"):
        quiz.key("B", "  ", WRONG)
    with pytest.raises(ValueError, match=r"feedback of each wrong letter, A, C, D; got \['A', 'C'\]"):
        quiz.key("B", WHY, {"A": "x", "C": "y"})
    with pytest.raises(ValueError, match="feedback of each wrong letter"):
        quiz.key("B", WHY, {**WRONG, "B": "the right one has no feedback"})
    with pytest.raises(ValueError, match="feedback of D: why that option is wrong"):
        quiz.key("B", WHY, {**WRONG, "D": " "})
    with pytest.raises(ValueError, match="not a quiz key"):
        quiz.is_right("C", "C")
    with pytest.raises(ValueError, match="not a quiz key"):
        quiz.is_right("C", "quiz1.abc.def.ghi")  # a key of the previous format


@pytest.mark.parametrize("pointer", ["option B", "answer B", "(B)", '"B"', "**B.**", "choices B"])
def test_feedback_may_not_name_a_letter(pointer):
    with pytest.raises(ValueError, match="names a letter"):
        quiz.key("B", WHY, {**WRONG, "A": f"Not this one: {pointer} is."})


def test_feedback_may_use_capitals_that_are_not_pointers():
    key = quiz.key("B", WHY, {**WRONG, "A": "A box of 4 x C deltas on C4 (A 224x224 box) is another matter."})
    assert quiz.why_wrong("A", key).startswith("A box")


def test_check_explains_a_right_answer(capsys):
    quiz.check("q1", "b", quiz.key("B", WHY, WRONG))
    out = capsys.readouterr().out
    assert '✓ q1 = "B" is right.' in out and "RoI Pool rounds" in out


@pytest.mark.parametrize("letter", ["A", "C", "D"])
def test_check_says_why_a_wrong_answer_is_wrong_without_the_right_one(capsys, letter):
    quiz.check("q1", letter, quiz.key("B", WHY, WRONG))  # a wrong letter is feedback, not an error
    out = capsys.readouterr().out
    assert out.startswith(f'✗ q1 = "{letter}" is not the right answer.')
    assert WRONG[letter] in " ".join(out.split())  # its own feedback, and no other option's
    assert [text in out for text in WRONG.values()].count(True) == 1
    assert "RoI Pool" not in out and '"B"' not in out
    assert out.rstrip().endswith("Change q1 and run both cells: the explanation opens when the answer is right.")


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
        quiz.check("q3", answer, quiz.key("B", WHY, WRONG))


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


def test_quiz_01_unpadded_sides_give_the_anchor_generator_a_wrong_stride():
    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        model = maskrcnn_resnet50_fpn()
        maps = model.backbone(torch.zeros(1, 3, 800, 1066))
    p2 = maps["0"]
    assert p2.shape[-1] == 267 and 1066 // 267 == 3  # an unpadded 1066 px side: stride 3 instead of 4
    generator = AnchorGenerator(((32,),), ((1.0,),))
    anchors = generator(ImageList(torch.zeros(1, 3, 800, 1066), [(800, 1066)]), [torch.zeros(1, 1, 200, 267)])[0]
    right_edge = anchors.view(200, 267, 4)[0, -1]
    assert (right_edge[0] + right_edge[2]).item() / 2 == 266 * 3  # 798, not 1064: 266 px off
    assert [tuple(m.shape[-2:]) for m in model.backbone(torch.zeros(1, 3, 800, 800, device="meta")).values()] == [
        (200, 200),
        (100, 100),
        (50, 50),
        (25, 25),
        (13, 13),
    ]


def test_quiz_02_the_top_down_map_is_upsampled_to_the_laterals_size():
    with torch.device("meta"):
        backbone = maskrcnn_resnet50_fpn().backbone
        maps = backbone(torch.zeros(1, 3, 800, 1066))  # 267 is not 2 x 134: only size= upsampling adds up
    assert [tuple(m.shape[-2:]) for m in maps.values()][:4] == [(200, 267), (100, 134), (50, 67), (25, 34)]
    assert backbone.body.layer3[-1].conv3.out_channels == 1024  # C4: 50x50x1024 for 800 px, before the FPN


def test_quiz_03_flattening_a_n_a_h_w_map_in_anchor_order():
    n, a, h, w = 1, 3, 2, 4
    cell = torch.tensor([[-1.0, -1, 1, 1], [-2, -2, 2, 2], [-3, -3, 3, 3]])
    anchors = anchor_grid(cell, (h, w), (8, 8))  # row by row, the A anchors of a location together
    # a head whose logit is the anchor's own (x centre, size) can be read back in either order
    centre_x = torch.arange(w).float().view(1, 1, 1, w).expand(n, a, h, w) * 8
    size = torch.tensor([2.0, 4, 6]).view(1, a, 1, 1).expand(n, a, h, w)
    for wrong in (lambda t: t.reshape(n, -1), lambda t: t.permute(0, 3, 2, 1).reshape(n, -1)):
        assert not torch.equal(wrong(centre_x)[0], (anchors[:, 0] + anchors[:, 2]) / 2)
    right = lambda t: t.permute(0, 2, 3, 1).reshape(n, -1)  # noqa: E731
    assert torch.equal(right(centre_x)[0], (anchors[:, 0] + anchors[:, 2]) / 2)
    assert torch.equal(right(size)[0], anchors[:, 2] - anchors[:, 0])
