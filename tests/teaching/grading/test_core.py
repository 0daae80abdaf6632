"""A check never blames correct code for an earlier helper's mistake: when the learner's
function calls another exercise of theirs by name (lesson 04's roi_align calls interpolation_weights),
the helper is checked first, and one that fails its check is replaced by the package's for that check,
which says so."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mrcnn_course.model import components
from mrcnn_course.teaching import grading

LESSON = Path(__file__).resolve().parent.parent / "solutions" / "04_roi_align" / "04_roi_align.ipynb"


def notebook(**replace: str) -> dict:
    """Lesson 04's solutions of interpolation_weights and roi_align, run as in a notebook (one namespace);
    `replace` edits a line of the source (old -> new) to play a learner's mistake."""
    cells = {c["id"]: "".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"]}
    namespace = {"torch": torch, "F": F, "components": components, "__name__": "__main__"}
    for cell in ("interpolation-weights", "roi-align"):
        source = cells[cell]
        for old, new in replace.items():
            source = source.replace(old, new)
        exec(compile(source, f"<cell {cell}>", "exec"), namespace)
    return namespace


NO_ZERO_OUTSIDE = {"    weights = weights * ~outside[..., None]\n": ""}  # a usual wrong interpolation_weights


def test_right_roi_align_with_a_wrong_helper_passes_with_the_packages_helper_and_says_so(capsys):
    learner = notebook(**NO_ZERO_OUTSIDE)
    helper = learner["interpolation_weights"]
    with pytest.raises(AssertionError):
        grading.check_interpolation_weights(helper)
    capsys.readouterr()
    grading.check_roi_align(learner["roi_align"], extra=True)
    out = " ".join(capsys.readouterr().out.split())
    assert "roi_align: " in out and "cases passed" in out
    assert "your interpolation_weights was replaced by the package's for this check" in out
    assert "case 'coordinates outside [-1, length]: no weight at all'" in out
    assert grading.passed("roi_align") is None  # not plugged in or saved with a helper that is wrong
    assert learner["interpolation_weights"] is helper  # given back afterwards
    assert all(len(line) <= grading.core.MESSAGE_WIDTH for line in capsys.readouterr().out.splitlines())


def test_wrong_roi_align_with_a_wrong_helper_is_blamed_for_its_own_mistake_only():
    learner = notebook(**NO_ZERO_OUTSIDE, **{"roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)": "pass"})
    with pytest.raises(AssertionError) as failure:
        grading.check_roi_align(learner["roi_align"])
    message = " ".join(str(failure.value).split())
    assert "with aligned=False a box is at least one cell wide and high" in message
    assert "your interpolation_weights was replaced by the package's for this check" in message


def test_with_a_right_helper_nothing_is_replaced(capsys):
    learner = notebook()
    grading.check_roi_align(learner["roi_align"])
    assert "replaced" not in capsys.readouterr().out
    assert grading.passed("roi_align") is learner["roi_align"]
