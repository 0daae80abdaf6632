"""mrcnn_course.teaching.grading.exercises_box_ops and lesson 03a: nms is asked for as the textbook greedy loop and
nms_fast as the same component made fast; the lesson's text states the contract and the traps, and leaves the fast
method to the hints (tests/teaching/grading/test_exercise.py covers both exercises with every other component's)."""

import json
from pathlib import Path

import pytest

from mrcnn_course.teaching import grading

ROOT = Path(__file__).resolve().parents[3]
LESSON = ROOT / "solutions" / "03_rpn" / "03a_anchors_and_boxes.ipynb"
# what the lesson once prescribed for a fast NMS, and its code: the hints hold the ideas now
PRESCRIPTIONS = ("Cluster-NMS", "blocks of", "block", "triu", "overlaps[", "matrix form", "tensor passes")


def lesson_text() -> str:
    """The lesson as a learner reads it: its markdown, and its code cells without the solutions."""
    parts = []
    for cell in json.loads(LESSON.read_text())["cells"]:
        source = "".join(cell["source"])
        parts.append(source.split("### BEGIN SOLUTION")[0] if "### BEGIN SOLUTION" in source else source)
    return "\n".join(parts)


@pytest.mark.parametrize("words", PRESCRIPTIONS)
def test_the_lesson_does_not_prescribe_the_fast_method(words):
    assert words not in lesson_text()


def test_the_fast_method_is_in_the_hints_one_idea_at_a_time(capsys):
    grading.hint("nms_fast", 1)
    first = capsys.readouterr().out
    assert first.startswith("nms_fast, step by step (1 of ") and "wastes" in first and "Cluster-NMS" not in first
    grading.hint("nms_fast")
    assert "Cluster-NMS" in capsys.readouterr().out


def test_the_lesson_does_not_print_quiz_03s_anchor_count():
    """Quiz 03 asks how many anchors R-50-FPN places on an 800 x 800 image: the lesson counts the small model's."""
    text = lesson_text()
    assert "level_anchors((192, 192)" in text and "(800, 800)" not in text and "159,882" not in text
