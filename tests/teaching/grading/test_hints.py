"""mrcnn_course.teaching.grading.hints and the lessons' exercise cells: each exercise states
its contract (arguments and results with shapes, the rules and traps) and keeps its steps out of sight
until the learner asks (grading.hint); no step is a near-copy of a line of the solution."""

import json
import re
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from mrcnn_course.teaching import grading

ROOT = Path(__file__).resolve().parents[3]
STEPS = {name: e.steps for name, e in {**grading.EXERCISES, **grading.HELPER_EXERCISES}.items()}
NAME = re.compile(r"[\w.]+(=[\w.]+)?")  # a name, or a keyword argument: a step may name what to call


def shared_code(step: str, line: str) -> str:
    """The longest piece of `line` that `step` repeats, with each name in it written as x: more than a
    few characters of that is a piece of the solution's code ("x = (x[:, x] * x[x, :]).x(-1)")."""
    match = SequenceMatcher(None, step, line, autojunk=False).find_longest_match()
    return NAME.sub("x", step[match.a : match.a + match.size].strip())


MOST_SHARED = 8  # "x(x, x)" is a call any step may name; "x = x[x, x] * x" is a copied line


def exercise_cells() -> dict[str, str]:
    """name -> the source of the solution cell that defines it, from every lesson in solutions/: a function's
    cell by the function's name, a module exercise's (`class MyHead(...): def forward`) by the exercise its
    forward's docstring points to (grading.hint("name"))."""
    found = {}
    for path in sorted((ROOT / "solutions").glob("[0-9][0-9]_*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            match = re.match(r"def (\w+)\(", source) or (
                re.match(r"class \w+\(", source) and re.search(r'grading\.hint\("(\w+)"\)', source)
            )
            if cell["metadata"].get("nbgrader", {}).get("solution") and match:
                found[match.group(1)] = source
    return found


CELLS = exercise_cells()


def test_every_exercise_has_steps():
    assert set(STEPS) == set(grading.EXERCISES) | set(grading.HELPER_EXERCISES) == set(CELLS)
    assert all(len(steps) >= 2 for steps in STEPS.values())


@pytest.mark.parametrize("name", sorted(CELLS))
def test_the_docstring_states_the_contract_and_points_to_the_hint(name):
    docstring = CELLS[name].split('"""')[1]
    assert "Args:" in docstring and "Returns:" in docstring
    assert "Rules and traps:" in docstring and f'grading.hint("{name}")' in docstring
    assert "TODO" not in docstring and not re.search(r"^\s+\d\. ", docstring, re.MULTILINE)  # no numbered steps


@pytest.mark.parametrize("name", sorted(CELLS))
def test_no_step_copies_a_line_of_the_solution(name):
    solution = CELLS[name].split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
    code = [line.split("  # ")[0] for line in solution.splitlines()]  # the comments give shapes, as docstrings do
    lines = [" ".join(line.split()) for line in code if len(line.strip()) >= 12]
    for step in STEPS[name]:
        for line in lines:
            shared = shared_code(step, line)
            assert len(shared) <= MOST_SHARED, f"step {step!r} shares {shared!r} with the solution line {line!r}"


def test_hint_prints_the_steps_numbered_or_the_first_few(capsys):
    grading.hint("roi_align")
    out = capsys.readouterr().out
    assert out.startswith("roi_align, step by step (6 of 6):") and "\n  6. " in out
    grading.hint("roi_align", 2)
    out = capsys.readouterr().out
    assert "(2 of 6)" in out and "\n  2. " in out and "\n  3. " not in out
    with pytest.raises(ValueError, match="no exercise named 'roi_allign'"):
        grading.hint("roi_allign")
