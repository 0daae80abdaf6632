"""A self-learner is not surprised: each lesson says, under its goals, that hidden cases exist
and what they cover, and a solution that passes the visible checks passes the hidden ones too.

Each lesson's graded cells are run here in one namespace, as a kernel would, without the rest of the
lesson: the setup cell's imports, every solution cell, then each check cell's visible part and, only
once it passed, its hidden part (tests/end_to_end/test_lessons.py runs whole notebooks; test_visible_cases.py
shows that every usual mistake already fails the visible part)."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# every lesson notebook, as "NN_name/notebook" (a lesson is one notebook or several)
LESSONS = sorted(
    str(p.relative_to(ROOT / "solutions").with_suffix("")) for p in (ROOT / "solutions").glob("[0-9][0-9]_*/*.ipynb")
)
HIDDEN = "### BEGIN HIDDEN TESTS"


def cells(lesson: str) -> list[dict]:
    return json.loads((ROOT / "solutions" / f"{lesson}.ipynb").read_text())["cells"]


def is_graded(lesson: str) -> bool:
    return any(c["metadata"].get("nbgrader", {}).get("grade") for c in cells(lesson))


GRADED = [lesson for lesson in LESSONS if is_graded(lesson)]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_lessons_00_and_08_grade_nothing_and_every_other_lesson_grades():
    ungraded = {"00_pipeline", "08_ablation"}  # the model at work; the ablation lab (predict, read, run)
    assert not any(is_graded(lesson) for lesson in LESSONS if lesson.split("/")[0] in ungraded)
    assert {lesson.split("/")[0] for lesson in GRADED} == {lesson.split("/")[0] for lesson in LESSONS} - ungraded


@pytest.mark.parametrize("lesson", GRADED)
def test_the_lesson_says_hidden_cases_exist_and_what_they_cover(lesson):
    ids = [c["id"] for c in cells(lesson)]
    assert ids.index("checks-and-hints") == ids.index("goals") + 1, "right under the goals"
    text = " ".join(source(cells(lesson)[ids.index("checks-and-hints")]).split())
    assert "**hidden cases**:" in text and "full marks" in text and "grading.hint(" in text
    covered = text.split("**hidden cases**:")[1].split(".")[0]
    assert len(covered.split()) >= 8, f"say what the hidden cases cover: {covered!r}"


@pytest.mark.slow
@pytest.mark.parametrize("lesson", GRADED)
def test_a_solution_that_passes_the_visible_checks_passes_the_hidden_ones(lesson, capsys):
    notebook = cells(lesson)
    setup = ast.parse(source(next(c for c in notebook if c["id"] == "setup")))
    imports = ast.Module([node for node in setup.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
    namespace = {"__name__": "__main__"}
    exec(compile(imports, f"{lesson} setup", "exec"), namespace)
    graded = []
    for cell in notebook:
        nbgrader = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and nbgrader.get("solution"):
            exec(compile(source(cell), f"{lesson} {cell['id']}", "exec"), namespace)
        if cell["cell_type"] == "code" and nbgrader.get("grade"):
            graded.append(cell)
    assert graded
    for cell in graded:
        visible, hidden = source(cell).split(HIDDEN)
        exec(compile(visible, f"{lesson} {cell['id']} (visible)", "exec"), namespace)
        exec(compile(hidden, f"{lesson} {cell['id']} (hidden)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.count("cases passed") == 2 * len(graded)
    assert "of them hidden" in printed and "replaced" not in printed
