"""Grading in parallel into a shared PostgreSQL gradebook gives the grades of a serial SQLite run.

A real PostgreSQL server (Debian's `postgresql` package, which .ci/run installs) is initialised in a
temporary folder and started on a free loopback port (as the `postgres` user when the tests run as
root: the server refuses root). The simulated class of tests/simulated_class.py (7 learners, 17
submissions) is graded serially into the course's SQLite gradebook, then by 2 workers into the
server (NBGRADER_DB_URL, as several machines would share it), and both gradebooks are read back.
About 2 minutes.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import simulated_class
from nbgrader.api import Gradebook

from mrcnn_course.teaching import course

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]
POSTGRES_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))  # Debian's layout: not on PATH
COURSE_ID = "mrcnn-course"


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    if not POSTGRES_BIN:
        pytest.skip("PostgreSQL's server is not installed (Debian: apt-get install postgresql; .ci/run does)")
    pytest.importorskip(
        "psycopg", reason="SQLAlchemy's PostgreSQL driver, psycopg[binary], is a dependency: pip install -e ."
    )
    bin_dir = Path(POSTGRES_BIN[-1])
    data = Path(tempfile.mkdtemp(prefix="gradebook-pg-"))  # under /tmp: the server's user must reach it
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "grader", "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w"]
    subprocess.run(_as_server_user([*ctl, "-o", options, "start"]), check=True, capture_output=True)
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "grader", "mrcnn"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://grader@127.0.0.1:{port}/mrcnn"
    finally:
        subprocess.run(_as_server_user([*ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _grades(db_url: str) -> dict[tuple[str, str, str], float | None]:
    """(learner, assignment, graded cell) -> the autograder's score, for every submission in the gradebook."""
    with Gradebook(db_url, COURSE_ID) as gradebook:
        return {
            (submission.student.id, assignment.name, grade.name): grade.auto_score
            for assignment in gradebook.assignments
            for submission in assignment.submissions
            for notebook in submission.notebooks
            for grade in notebook.grades
        }


@pytest.fixture(scope="module")
def graded(postgres_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    simulated_class.make_course(root)
    serial = course.autograde(root, jobs=1)
    sqlite_grades = _grades(f"sqlite:///{root}/grading/gradebook.db")
    os.environ["NBGRADER_DB_URL"] = postgres_url  # nbgrader_config.py reads it; the workers inherit it
    try:
        course.release(root)  # records every assignment in the shared gradebook before anyone grades
        parallel = course.autograde(root, jobs=2)
    finally:
        del os.environ["NBGRADER_DB_URL"]
    return {"serial": serial, "parallel": parallel, "sqlite": sqlite_grades, "postgres": _grades(postgres_url)}


def test_the_class_is_large_enough(graded):
    assert len({o.learner for o in graded["parallel"]}) >= 6 and len(graded["parallel"]) == 17


def test_two_workers_into_postgresql_give_the_serial_sqlite_grades(graded):
    assert graded["postgres"] == graded["sqlite"]
    # lesson: 2 checks x 6 learners; each quiz: its questions x the learners who handed it in
    quizzes = sum(
        len(simulated_class._right_letters(quiz))
        * sum(work[quiz] is not None for work in simulated_class.QUIZ_WORK.values())
        for quiz in simulated_class.QUIZZES
    )
    assert len(graded["sqlite"]) == 2 * 6 + quizzes
    expected = simulated_class.expected()["scores"]
    for run in ("serial", "parallel"):
        scores = {(o.learner, o.assignment): o.score for o in graded[run]}
        assert scores == {(learner, name): s for name, by in expected.items() for learner, s in by.items()}, run


def test_a_failed_submission_is_reported_the_same_way(graded):
    failed = {
        run: [(o.learner, o.assignment) for o in graded[run] if o.score is None] for run in ("serial", "parallel")
    }
    assert failed["serial"] == failed["parallel"] == [("fay", "90_boxes")]
    assert "Notebook does not appear to be JSON" in next(o.error for o in graded["parallel"] if o.score is None)
