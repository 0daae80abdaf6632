"""Every lesson notebook in solutions/ (NN_name/*.ipynb: a lesson is one notebook or several), run by a real
kernel through nbgrader's Validator:
the instructor's version runs top to bottom and passes every graded cell; the release that nbgrader
generates from it, left untouched, fails each graded cell with the NotImplementedError stub and
nothing else. Lessons added later are found and tested the same way.

Each notebook is executed once, by nbgrader's Validator (its Execute preprocessor, a python3 kernel of
this environment, TQDM_DISABLE=1 and AUTOGRADING=1 as when autograding); the executed notebook is kept
so that each cell's outputs can be inspected as well. Run with -s to see the per-notebook times.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbgrader.validator import Validator
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted({p.parent.name for p in (ROOT / "solutions").glob("[0-9][0-9]_*/*.ipynb")})
# each notebook of each lesson, as "NN_name/notebook.ipynb"
NOTEBOOKS = sorted(str(p.relative_to(ROOT / "solutions")) for p in (ROOT / "solutions").glob("[0-9][0-9]_*/*.ipynb"))

pytestmark = pytest.mark.slow


class RecordingValidator(Validator):
    """nbgrader's Validator, keeping the notebook it executed so every cell can be inspected."""

    executed = None

    def _preprocess(self, nb):
        self.executed = super()._preprocess(nb)
        return self.executed


@pytest.fixture(autouse=True)
def grading_environment(tmp_path, monkeypatch):
    """What autograding sets (the kernel inherits it), and a course folder of its own."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("AUTOGRADING", "1")
    monkeypatch.setenv("MRCNN_COURSE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A temporary copy of the course (its nbgrader_config.py and every lesson) with each lesson
    released by `nbgrader generate_assignment NAME --force`, as `make release` does; the repository
    stays untouched."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for lesson in LESSONS:
        shutil.copytree(ROOT / "solutions" / lesson, root / "solutions" / lesson)
        done = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", lesson, "--force"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        released = sorted(p.name for p in (root / "lessons" / lesson).glob("*.ipynb"))
        assert done.returncode == 0 and released == sorted(
            p.name for p in (ROOT / "solutions" / lesson).glob("*.ipynb")
        ), done.stderr
    return root


def validate(path: Path, version: str) -> tuple[dict, list]:
    """nbgrader's verdict on the notebook at `path`, and the cells it executed."""
    # the course's cell time limit (nbgrader_config.py), not the Validator's default 30 s
    validator = RecordingValidator(config=Config({"Execute": {"timeout": 120}}))
    start = time.monotonic()
    results = validator.validate(str(path))
    print(f"\n{path.stem} ({version}): {time.monotonic() - start:.1f} s")
    return results, validator.executed.cells


def errors(cell) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]


def name(cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id") or cell.get("id", "?")


def is_graded(cell) -> bool:
    return cell.metadata.get("nbgrader", {}).get("grade", False) and cell.cell_type == "code"


def test_lessons_are_found():
    assert LESSONS == [
        "00_pipeline",
        "01_input_image",
        "02_backbone",
        "03_rpn",
        "04_roi_align",
        "05_box_head",
        "06_mask_head",
        "07_training",
        "08_ablation",
    ]
    assert "03_rpn/03a_anchors_and_boxes.ipynb" in NOTEBOOKS and "03_rpn/03b_proposals_and_training.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_solution_runs_top_to_bottom_and_passes_every_graded_cell(notebook, course, tmp_path):
    lesson = Path(notebook).parent.name
    folder = shutil.copytree(course / "solutions" / lesson, tmp_path / lesson)  # run outside the repository
    results, cells = validate(folder / Path(notebook).name, "solution")
    failed = {name(c): errors(c) for c in cells if errors(c)}
    assert failed == {}, f"cells that raised: {failed}"
    assert results == {}, f"nbgrader's Validator: {results}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_untouched_release_fails_each_graded_cell_with_the_stub_only(notebook, course):
    released = course / "lessons" / notebook
    source = released.read_text()
    assert "### BEGIN SOLUTION" not in source and "### BEGIN HIDDEN TESTS" not in source
    results, cells = validate(released, "untouched release")
    graded = [c for c in cells if is_graded(c)]  # none in lesson 00, which only shows the model at work
    for cell in graded:
        assert [e.split(":")[0] for e in errors(cell)] == ["NotWrittenYet"], (  # a NotImplementedError
            f"graded cell {name(cell)}: {errors(cell)}"
        )
    others = {name(c): errors(c) for c in cells if not is_graded(c) and errors(c)}
    assert others == {}, f"cells other than the graded ones raised: {others}"
    assert len(results.get("failed", [])) == len(graded), f"nbgrader's Validator: {results}"
