"""nbgrader's exchange, set up as nbgrader_config.py and the Makefile set it up (README: "Teaching with
this course"), with nbgrader's real commands: a learner fetches and submits on the command line as the
README says, the instructor collects with the course's command.

In a temporary copy of the course (lesson 00 and its quiz) with NBGRADER_EXCHANGE in a temporary
folder. About 30 s (more on a busy machine).
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.exchange.default.exchange import Exchange

from mrcnn_course.teaching import course

ROOT = Path(__file__).resolve().parents[2]
LESSON, QUIZ = "00_pipeline", "quiz_00_pipeline"
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]


def test_the_default_exchange_is_nbgraders_own(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXCHANGE", raising=False)
    assert Exchange.root.default_value == "/usr/local/share/nbgrader/exchange"
    assert course.course_api(ROOT).exchange_root == Exchange.root.default_value


def test_make_exchange_creates_the_folder_everyone_writes_to(tmp_path):
    folder = tmp_path / "exchange"
    subprocess.run(["make", "-s", "exchange", f"NBGRADER_EXCHANGE={folder}"], cwd=ROOT, check=True)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o777


@pytest.fixture()
def course_with_exchange(tmp_path, monkeypatch):
    root = tmp_path / "course"
    for name in (LESSON, QUIZ):
        (root / "solutions" / name).mkdir(parents=True)
        nbformat.write(
            nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4),
            root / "solutions" / name / f"{name}.ipynb",
        )
    (root / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    exchange = tmp_path / "exchange"
    monkeypatch.setenv("NBGRADER_EXCHANGE", str(exchange))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # nbgrader's submission cache
    course.release(root)
    return root, exchange


def _learner(command: list[str], home: Path, exchange: Path) -> subprocess.CompletedProcess:
    """What a learner types in a terminal of their own (no course config): the README's commands."""
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *command, "--course=mrcnn-course", f"--Exchange.root={exchange}"],
        cwd=home,
        capture_output=True,
        text=True,
        env={**os.environ, "NBGRADER_EXCHANGE": ""},  # learners do not have the instructor's settings
    )


def test_the_formgrader_shows_release_and_collect_once_the_exchange_exists(course_with_exchange):
    root, exchange = course_with_exchange
    assert not course.course_api(root).exchange_is_functional  # no folder yet: every row a draft
    exchange.mkdir(mode=0o777)
    api = course.course_api(root)
    assert api.exchange_root == str(exchange) and api.exchange_is_functional
    rows = {row["name"]: row for row in api.get_assignments()}
    # the formgrader draws Release and Collect when both are set (manage_assignments.js)
    assert rows[LESSON]["releaseable"] and rows[LESSON]["release_path"] == f"lessons/{LESSON}"
    # a quiz's release is in quizzes/, which the formgrader does not look in: `make exchange-release` does
    assert rows[QUIZ]["release_path"] is None


def test_release_fetch_submit_collect(course_with_exchange, tmp_path):
    root, exchange = course_with_exchange
    exchange.mkdir(mode=0o777)
    course.exchange_release(root, [LESSON, QUIZ])  # make exchange-release NAME="00_pipeline quiz_00_pipeline"
    for name in (LESSON, QUIZ):
        assert (exchange / "mrcnn-course" / "outbound" / name / f"{name}.ipynb").is_file()
    home = tmp_path / "ada"
    listed = _learner(["list"], home, exchange)
    assert f"mrcnn-course {QUIZ}" in listed.stdout + listed.stderr
    fetched = _learner(["fetch_assignment", QUIZ], home, exchange)
    assert fetched.returncode == 0, fetched.stderr
    quiz = nbformat.read(home / QUIZ / f"{QUIZ}.ipynb", 4)
    assert quiz.cells == nbformat.read(root / "quizzes" / QUIZ / f"{QUIZ}.ipynb", 4).cells  # the released quiz
    submitted = _learner(["submit", QUIZ, "--student=ada"], home, exchange)
    assert submitted.returncode == 0, submitted.stderr
    course.exchange_collect(root, [QUIZ])  # make exchange-collect NAME=quiz_00_pipeline
    assert (root / "grading" / "submitted" / "ada" / QUIZ / f"{QUIZ}.ipynb").is_file()
    with pytest.raises(ValueError, match="no assignment quiz_9 in solutions/"):
        course.exchange_release(root, ["quiz_9"])
