"""Teaching with nbgrader: release the lessons and quizzes, autograde a class, write feedback and grades.

    python -m mrcnn_course.teaching release     # solutions/ -> lessons/, quizzes/      (make release)
    python -m mrcnn_course.teaching autograde   # grading/submitted -> grades, feedback  (make autograde)
    python -m mrcnn_course.teaching grades      # the gradebook -> grading/grades.csv    (make grades)

Run it from the course's root, where nbgrader_config.py is (nbgrader reads it from the current
directory). Sources: solutions/NN_name (lessons -> lessons/) and solutions/quiz_NN_name (quizzes ->
quizzes/); learners' work: grading/submitted/<learner>/<assignment>/, next to the gradebook.

Each command runs nbgrader's own converters through nbgrader.apps.NbGraderAPI (the code behind
`nbgrader generate_assignment NAME --force`, `nbgrader autograde`, `nbgrader generate_feedback`) in
one process. What the course changes in nbgrader's pipelines is in nbgrader_steps.py.
"""

import argparse
import csv
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.utils import temp_attrs
from sqlalchemy.exc import SAWarning
from traitlets.config.loader import PyFileConfigLoader

LESSON_NAME = re.compile(r"\d\d_[a-z0-9_]+")  # 03_rpn
QUIZ_NAME = re.compile(r"quiz_\d\d_[a-z0-9_]+")  # quiz_03_rpn
RELEASE_DIRECTORIES = {"lesson": "lessons", "quiz": "quizzes"}


@dataclass(frozen=True)
class Assignment:
    name: str  # the folder name in solutions/
    kind: str  # "lesson" or "quiz"

    @property
    def release_directory(self) -> str:
        return RELEASE_DIRECTORIES[self.kind]


def find_assignments(root: Path) -> list[Assignment]:
    """The lessons (NN_name) then the quizzes (quiz_NN_name) found in root/solutions, by name."""
    source = Path(root) / "solutions"
    if not source.is_dir():
        raise FileNotFoundError(f"no solutions/ folder in {root}: run this from the course's root folder")
    found = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if QUIZ_NAME.fullmatch(folder.name):
            found.append(Assignment(folder.name, "quiz"))
        elif LESSON_NAME.fullmatch(folder.name):
            found.append(Assignment(folder.name, "lesson"))
        else:
            print(
                f"skipped solutions/{folder.name}: an assignment folder is named NN_name (a lesson) "
                "or quiz_NN_name (a quiz), e.g. 03_rpn or quiz_03_rpn",
                file=sys.stderr,
            )
    return sorted(found, key=lambda a: (a.kind != "lesson", a.name))


def course_api(root: Path) -> NbGraderAPI:
    """nbgrader's API with the course's nbgrader_config.py (and nothing else) loaded."""
    if not (Path(root) / "nbgrader_config.py").is_file():
        raise FileNotFoundError(f"no nbgrader_config.py in {root}: run this from the course's root folder")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return NbGraderAPI(config=config)


class NbgraderFailed(RuntimeError):
    """An nbgrader step failed; the message carries nbgrader's own log."""


def _check(result: dict, what: str) -> None:
    if not result["success"]:
        raise NbgraderFailed(f"{what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def _generate(api: NbGraderAPI, assignment: Assignment, release_directory: str | None = None) -> None:
    with temp_attrs(api.coursedir, release_directory=release_directory or assignment.release_directory):
        result = api.generate_assignment(assignment.name, force=True)
    _check(result, f"nbgrader generate_assignment {assignment.name} --force")


def release(root: Path, names: list[str] | None = None) -> list[Assignment]:
    """Regenerate lessons/ and quizzes/ from solutions/ (all assignments, or those named) and record
    them in the gradebook. Released notebooks have no outputs; the same sources give the same bytes."""
    root = Path(root)
    assignments = find_assignments(root)
    unknown = set(names or []) - {a.name for a in assignments}
    if unknown:
        raise ValueError(
            f"no assignment {', '.join(sorted(unknown))} in solutions/; "
            f"there are: {', '.join(a.name for a in assignments)}"
        )
    chosen = [a for a in assignments if names is None or a.name in names]
    api = course_api(root)
    for assignment in chosen:
        _generate(api, assignment)
        print(f"released {assignment.release_directory}/{assignment.name}")
    for directory in RELEASE_DIRECTORIES.values():
        for orphan in sorted(set(_subfolders(root / directory)) - {a.name for a in assignments}):
            print(
                f"warning: {directory}/{orphan} has no source in solutions/: delete it "
                f"(git rm -r {directory}/{orphan})",
                file=sys.stderr,
            )
    return chosen


def _subfolders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []


def _ensure_in_gradebook(api: NbGraderAPI, assignment: Assignment) -> None:
    """The gradebook must know an assignment's notebooks and test cells before autograding it; if it
    does not (a fresh clone), nbgrader generates it into a throwaway folder: lessons/ stays as it is."""
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        try:
            if gradebook.find_assignment(assignment.name).notebooks:
                return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory() as scratch:
        _generate(api, assignment, release_directory=scratch)


@dataclass
class Outcome:
    """One learner's submission of one assignment after autograding."""

    learner: str
    assignment: str
    score: float | None = None  # None when autograding failed
    max_score: float | None = None
    error: str = ""  # nbgrader's error lines when it failed
    seconds: float = 0.0  # autograding and feedback, wall clock


def autograde(root: Path, learners: list[str] | None = None, assignments: list[str] | None = None) -> list[Outcome]:
    """Autograde every submission in grading/submitted/<learner>/<assignment>/ and write its feedback.

    A submission that cannot be graded (a notebook that is not valid JSON, a kernel that dies) is
    reported in its Outcome and the others are still graded, as `nbgrader autograde` does.
    """
    root = Path(root)
    api = course_api(root)
    known = {a.name: a for a in find_assignments(root)}
    submitted = Path(api.coursedir.root) / api.coursedir.submitted_directory
    outcomes = []
    for learner in sorted(set(_subfolders(submitted)) & set(learners or _subfolders(submitted))):
        for name in sorted(
            set(_subfolders(submitted / learner)) & set(assignments or _subfolders(submitted / learner))
        ):
            outcome = Outcome(learner, name)
            outcomes.append(outcome)
            if name not in known:
                outcome.error = (
                    f"no assignment {name!r} in solutions/: rename the folder "
                    f"grading/submitted/{learner}/{name} to an assignment's name"
                )
                continue
            _ensure_in_gradebook(api, known[name])
            start = time.perf_counter()
            with warnings.catch_warnings(action="ignore", category=SAWarning):  # nbgrader's own session notes
                result = api.autograde(name, learner, force=True)
            if result["success"]:
                _check(api.generate_feedback(name, learner, force=True), f"nbgrader generate_feedback {name} {learner}")
                with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
                    submission = gradebook.find_submission(name, learner)
                    outcome.score, outcome.max_score = submission.score, submission.max_score
            else:
                outcome.error = _error_lines(result)
            outcome.seconds = time.perf_counter() - start
    return outcomes


GENERIC_ERRORS = ("There was an error processing", "Traceback (most recent call last)", "Please see the")


def _error_lines(result: dict) -> str:
    """Why nbgrader failed, in one line: its specific error messages and the exception it raised."""
    log = result.get("log", "")
    errors = [
        line.removeprefix("[ERROR] ")
        for line in log.splitlines()
        if line.startswith("[ERROR]") and not any(generic in line for generic in GENERIC_ERRORS)
    ]
    exceptions = [
        e
        for e in re.findall(r"^\s*([\w.]+(?:Error|Exception)\b.*)$", log, re.MULTILINE)
        if "NbGraderException" not in e
    ]  # nbgrader's own "see the traceback above"
    return "; ".join(errors + exceptions[-1:]) or "see nbgrader's log"


def write_grades(root: Path) -> Path:
    """grading/grades.csv: one row per learner, one column per assignment (scores), a max row first
    and a total column. A submission that could not be autograded reads "failed"; none, an empty cell."""
    root = Path(root)
    api = course_api(root)
    order = {a.name: i for i, a in enumerate(find_assignments(root))}
    path = (Path(api.coursedir.root) / api.coursedir.submitted_directory).parent / "grades.csv"
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        names = sorted((a.name for a in gradebook.assignments), key=lambda n: (order.get(n, len(order)), n))
        maxima = [gradebook.find_assignment(n).max_score for n in names]
        rows = [["learner", *names, "total"], ["(max)", *maxima, sum(maxima)]]
        for student in sorted(gradebook.students, key=lambda s: s.id):
            cells, total = [], 0.0
            for name in names:
                try:
                    submission = gradebook.find_submission(name, student.id)
                except MissingEntry:
                    cells.append("")
                    continue
                if any(
                    g.auto_score is None and g.manual_score is None for nb in submission.notebooks for g in nb.grades
                ):
                    cells.append("failed")
                    continue
                cells.append(submission.score)
                total += submission.score
            rows.append([student.id, *cells, total])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        csv.writer(out).writerows(rows)
    return path


def _print_outcomes(outcomes: list[Outcome]) -> int:
    """The autograding table; returns how many submissions failed."""
    for o in outcomes:
        status = f"{o.score:g} / {o.max_score:g}" if o.score is not None else "FAILED"
        print(f"{o.learner:20} {o.assignment:24} {status}" + (f"\n    {o.error}" if o.error else ""))
    failed = sum(o.score is None for o in outcomes)
    print(f"{len(outcomes)} submissions, {failed} failed; feedback in grading/feedback/")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_course.teaching", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    release_cmd = commands.add_parser("release", help="regenerate lessons/ and quizzes/ from solutions/")
    release_cmd.add_argument("names", nargs="*", help="assignments to release (default: all)")
    grade_cmd = commands.add_parser("autograde", help="grade grading/submitted and write feedback")
    grade_cmd.add_argument("--learner", action="append", help="only this learner (repeatable)")
    grade_cmd.add_argument("--assignment", action="append", help="only this assignment (repeatable)")
    commands.add_parser("grades", help="write grading/grades.csv from the gradebook")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if args.command == "release":
            release(root, args.names or None)
        elif args.command == "autograde":
            return 1 if _print_outcomes(autograde(root, args.learner, args.assignment)) else 0
        else:
            print(f"wrote {write_grades(root)}")
    except (FileNotFoundError, ValueError, NbgraderFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
