"""Teaching with nbgrader: release the lessons and quizzes, autograde a class, write feedback and grades.

    release(root)                     # solutions/ -> lessons/, quizzes/      (make release)
    outcomes = autograde(root)        # grading/submitted -> grades, feedback  (make autograde)
    survey_submissions(...)           # what grading/submitted holds, read before autograding
    write_grades(root)                # the gradebook -> grading/grades.csv    (make grades)
    exchange_release(root, names)     # lessons/, quizzes/ -> nbgrader's exchange
    exchange_collect(root, names)     # the exchange -> grading/submitted

`python -m mrcnn_course.teaching` runs them from the command line (__main__.py), with the dashboard.
Run it from the course's root, where nbgrader_config.py is (nbgrader reads it from the current
directory). Sources: solutions/NN_name (lessons -> lessons/) and solutions/quiz_NN_name (quizzes ->
quizzes/); learners' work: grading/submitted/<learner>/<assignment>/, next to the gradebook.

Each function runs nbgrader's own converters through nbgrader.apps.NbGraderAPI (the code behind
`nbgrader generate_assignment NAME --force`, `nbgrader autograde`, `nbgrader generate_feedback`,
`nbgrader release_assignment`, `nbgrader collect`). Autograding runs in one process, or in `jobs`
worker processes that each grade one submission at a time into the same gradebook (SQLite, or the
PostgreSQL server that NBGRADER_DB_URL names, which several machines can share: see shard, and
shard_from_environment for a Slurm or Kubernetes job array). What the course changes in nbgrader's
pipelines is in nbgrader_steps.py. The re-check outside the kernel (grading/sealed.py) needs, per exercise,
its expected outputs and the package's time on its speed case: autograde builds them once, before grading
anyone, and hands them to its workers, each of which starts its warm runner before its first submission;
lessons' kernels are forks of a zygote each grading process starts once (warm_kernels.py).
"""

import csv
import difflib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.utils import temp_attrs
from sqlalchemy.exc import SAWarning
from traitlets.config.loader import PyFileConfigLoader

from mrcnn_course.teaching import nbgrader_steps, warm_kernels

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
    chosen = _chosen(assignments, names)
    api = course_api(root)
    for assignment in chosen:
        _generate(api, assignment)
        print(f"released {assignment.release_directory}/{assignment.name}")
    for directory in RELEASE_DIRECTORIES.values():
        for orphan in sorted(set(subfolders(root / directory)) - {a.name for a in assignments}):
            print(
                f"warning: {directory}/{orphan} has no source in solutions/: delete it "
                f"(git rm -r {directory}/{orphan})",
                file=sys.stderr,
            )
    return chosen


def _chosen(assignments: list[Assignment], names: list[str] | None) -> list[Assignment]:
    """The assignments named (all of them for None), or a ValueError that lists the real names."""
    unknown = set(names or []) - {a.name for a in assignments}
    if unknown:
        raise ValueError(
            f"no assignment {', '.join(sorted(unknown))} in solutions/; "
            f"there are: {', '.join(a.name for a in assignments)}"
        )
    return [a for a in assignments if names is None or a.name in names]


def exchange_release(root: Path, names: list[str]) -> list[Assignment]:
    """Put the released lessons and quizzes named into nbgrader's exchange (Exchange.root, set by
    NBGRADER_EXCHANGE in nbgrader_config.py) for learners to fetch: `nbgrader release_assignment NAME`,
    from lessons/ or quizzes/ as each one's kind says. The formgrader's Release button does this for
    lessons; it cannot for quizzes (it looks for them in lessons/)."""
    root = Path(root)
    chosen = _chosen(find_assignments(root), names)
    api = course_api(root)
    for assignment in chosen:
        with temp_attrs(api.coursedir, release_directory=assignment.release_directory):
            _check(api.release_assignment(assignment.name), f"nbgrader release_assignment {assignment.name}")
        print(f"released {assignment.release_directory}/{assignment.name} to the exchange, course {api.course_id}")
    return chosen


def exchange_collect(root: Path, names: list[str]) -> list[Assignment]:
    """Copy the learners' submissions of the assignments named from the exchange into
    grading/submitted/<learner>/<assignment>/ (`nbgrader collect NAME`; newer submissions replace older)."""
    root = Path(root)
    chosen = _chosen(find_assignments(root), names)
    api = course_api(root)
    for assignment in chosen:
        _check(api.collect(assignment.name), f"nbgrader collect {assignment.name}")
        print(f"collected {assignment.name} into {api.coursedir.submitted_directory}/<learner>/{assignment.name}")
    return chosen


def subfolders(folder: Path) -> list[str]:
    """The names of the folders in `folder` (hidden ones left out; none if it does not exist): learners in
    grading/submitted, a learner's assignments, the released assignments."""
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


@dataclass
class Survey:
    """What grading/submitted holds for the learners chosen, read before anything is graded."""

    to_grade: list[tuple[str, str]]  # (learner, assignment): folders named after an assignment, with its notebook
    ungradable: list[Outcome]  # submissions nbgrader cannot grade, each with the reason and what to do
    notes: list[str]  # one line per entry skipped or worth a look: its path, then what to do
    # (learner, assignment) -> why a notebook in it is broken (empty, not JSON, no cells): still graded,
    # for nbgrader records the failure, but the reason is the survey's
    broken: dict[tuple[str, str], str]


def survey_submissions(
    root: Path,
    submitted: Path,
    assignments: list[Assignment],
    learners: list[str],
    names: list[str] | None = None,
) -> Survey:
    """Read submitted/<learner>/<assignment>/<notebook>.ipynb for the learners given (and only the
    assignments named, or all) without running anything. The entries of submitted/ itself are
    always read: a hidden entry or a file there is a note (nbgrader would pass over it in silence).

    A folder named after no assignment, or one without any of its assignment's notebooks (renamed,
    or none at all), cannot be graded: an Outcome says why. A notebook renamed beside the right ones,
    or a missing one of several is a note; one that is empty, not valid JSON or without cells is in
    `broken`; either way the submission is still graded (nbgrader scores a missing notebook 0 and
    fails a broken one, for that learner only, and the gradebook records the failure)."""
    source = Path(root) / "solutions"
    notebooks = {a.name: sorted(p.name for p in (source / a.name).glob("*.ipynb")) for a in assignments}
    assignment_of = {notebook: name for name, files in notebooks.items() for notebook in files}
    found = Survey([], [], [], {})
    shown = _shown(submitted, root)
    for entry in _entries(submitted):
        if entry.name.startswith("."):
            found.notes.append(
                f"skipped {shown}/{entry.name}: hidden, so not a learner's folder"
                + ("; if it holds a learner's work, rename it to the learner's name" if entry.is_dir() else "")
            )
        elif not entry.is_dir():
            found.notes.append(
                f"skipped {shown}/{entry.name}: a file, not a learner's folder; a learner's work goes in "
                f"{shown}/<learner>/<assignment>/"
            )
    for learner in learners:
        folder = submitted / learner
        handed_in = []
        for entry in _entries(folder):
            path = f"{shown}/{learner}/{entry.name}"
            if entry.name.startswith("."):
                found.notes.append(
                    f"skipped {path}: hidden, so not an assignment's folder"
                    + (
                        "; if it holds an assignment's work, rename it to the assignment's name"
                        if entry.is_dir()
                        else ""
                    )
                )
            elif not entry.is_dir():
                where = f"{assignment_of[entry.name]}/{entry.name}" if entry.name in assignment_of else "<assignment>/"
                found.notes.append(
                    f"skipped {path}: not in an assignment's folder; move it to {shown}/{learner}/{where}"
                )
            else:
                handed_in.append(entry.name)
        if not handed_in:
            found.notes.append(
                f"{shown}/{learner}/: no assignment's folder in it, nothing graded for {learner}; "
                f"their work goes in {shown}/{learner}/<assignment>/"
            )
        for name in handed_in:
            if names is not None and name not in names:
                continue
            if name not in notebooks:
                close = difflib.get_close_matches(name, notebooks, n=1)
                found.ungradable.append(
                    Outcome(
                        learner,
                        name,
                        error=f"no assignment {name!r} in solutions/: rename the folder {shown}/{learner}/{name} "
                        f"to an assignment's name" + (f" ({close[0]}?)" if close else ""),
                    )
                )
                continue
            problems, notes, broken = _survey_notebooks(
                folder / name, f"{shown}/{learner}/{name}", notebooks[name], learner
            )
            found.notes += notes
            if broken:
                found.broken[learner, name] = "; ".join(broken)
            if problems:
                found.ungradable.append(Outcome(learner, name, error="; ".join(problems)))
            else:
                found.to_grade.append((learner, name))
    return found


def _survey_notebooks(
    folder: Path, shown: str, expected: list[str], learner: str
) -> tuple[list[str], list[str], list[str]]:
    """(problems that stop grading, notes, broken notebooks) for one submission folder of `expected` notebooks."""
    present = sorted(p.name for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    missing = [name for name in expected if name not in present]
    others = [name for name in present if name not in expected]
    lines = [
        f"{shown}/{name}: expected {' or '.join(missing)}; rename it"
        if missing
        else f"{shown}/{name}: not one of the assignment's notebooks ({', '.join(expected)}), so not graded; "
        "delete it if it is a copy"
        for name in others
    ]
    if len(missing) == len(expected):  # nothing nbgrader could grade: it would only say "No notebooks found"
        return lines or [f"{shown}/: no notebook in it; {learner} hands in {' and '.join(expected)}"], [], []
    if not others:
        lines += [f"{shown}/{name}: not handed in, it scores 0; ask {learner} for it" for name in missing]
    broken = [
        f"{shown}/{name}: {problem}, so nothing in it can be graded; ask {learner} to hand it in again"
        for name in expected
        if name in present and (problem := _notebook_problem(folder / name))
    ]
    return [], lines, broken


def _notebook_problem(path: Path) -> str | None:
    """What makes a file no notebook to grade (empty, not JSON, no cells), or None."""
    text = path.read_bytes()
    if not text.strip():
        return "an empty file"
    try:
        notebook = json.loads(text)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        return f"not valid JSON ({error})"
    if not isinstance(notebook, dict) or not notebook.get("cells"):
        return "a notebook without cells"
    return None


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _shown(path: Path, root: Path) -> str:
    """path as the instructor reads it: from the course's root (grading/submitted/ana), else whole."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


class NothingToGrade(RuntimeError):
    """Autograding found no submission to grade; the message says where it looked and what to do."""


def autograde(
    root: Path,
    learners: list[str] | None = None,
    assignments: list[str] | None = None,
    jobs: int = 1,
    shard: tuple[int, int] = (1, 1),
) -> list[Outcome]:
    """Autograde every submission in grading/submitted/<learner>/<assignment>/ and write its feedback.

    First the folder is surveyed (survey_submissions): each entry skipped or worth a look is one line
    on stderr that names its path and what to do. A submission that cannot be graded (a folder named
    after no assignment, a notebook renamed, a notebook that is not valid JSON, a kernel that dies) is
    reported in its Outcome and the others are still graded, as `nbgrader autograde` does. A learner
    or an assignment named that does not exist is a ValueError that lists the real ones; nothing to
    grade at all is NothingToGrade.
    jobs > 1 grades that many submissions at once, each in a worker process of its own; the grades
    are the serial run's. shard=(k, n) grades only the k-th of every n learners (in sorted order), so
    that n machines sharing one gradebook (NBGRADER_DB_URL) and the submissions grade a class together.
    Outcomes come back sorted by learner, then assignment, however many jobs ran. The workers are
    started with multiprocessing's "spawn": a script that calls this with jobs > 1 needs the usual
    `if __name__ == "__main__":` guard (`python -m mrcnn_course.teaching`, pytest and notebooks are fine).
    """
    root = Path(root)
    api = course_api(root)
    known = find_assignments(root)
    submitted = Path(api.coursedir.root) / api.coursedir.submitted_directory
    index, count = shard
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: the first number counts from 1 to the second, e.g. 2/3")
    everyone = sorted(subfolders(submitted))
    if everyone and set(learners or []) - set(everyone):
        raise ValueError(
            f"no learner {', '.join(sorted(set(learners or []) - set(everyone)))} in {_shown(submitted, root)}/; "
            f"there are: {', '.join(everyone)}"
        )
    _chosen(known, assignments)  # a ValueError for a name that is no assignment
    chosen = sorted(set(learners or everyone) & set(everyone))[index - 1 :: count]
    found = survey_submissions(root, submitted, known, chosen, assignments)
    for note in found.notes + list(found.broken.values()):
        print(note, file=sys.stderr)
    if not found.to_grade and not found.ungradable:
        raise NothingToGrade(_nothing_found(_shown(submitted, root), everyone, chosen, shard, assignments))
    todo, outcomes = found.to_grade, list(found.ungradable)
    by_name = {a.name: a for a in known}
    # nbgrader adds an assignment or a learner to the gradebook the first time it grades them; two
    # workers adding the same one at once would collide, so every one is added before they start.
    for name in sorted({name for _, name in todo}):
        _ensure_in_gradebook(api, by_name[name])
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        for learner in sorted({learner for learner, _ in todo}):
            gradebook.update_or_create_student(learner)
    exercises = _exercises_checked(root, sorted({name for _, name in todo}))
    if jobs <= 1 or len(todo) <= 1:
        with _warm_here(exercises):
            outcomes += [_grade(api, learner, name) for learner, name in todo]
    else:
        with tempfile.TemporaryDirectory(prefix="mrcnn-references-") as private:  # this run's, mode 0700
            references = None
            if exercises:
                from mrcnn_course.teaching.grading import sealed  # torch: only when an exercise is graded

                references = sealed.save_references(exercises, private)
            # spawn, not fork: each worker starts clean (no copied gradebook connections or kernel threads)
            with ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(str(root), jobs, references),
            ) as pool:
                outcomes += pool.map(_grade_in_worker, todo)
    for outcome in outcomes:  # nbgrader's words for a broken notebook (a KeyError for no cells) come second
        if outcome.score is None and (why := found.broken.get((outcome.learner, outcome.assignment))):
            outcome.error = f"{why} (nbgrader: {outcome.error})"
    return sorted(outcomes, key=lambda o: (o.learner, o.assignment))


SLURM_ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")
KUBERNETES_INDEX = ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS")  # the second: set in the Job's spec (README)


def shard_from_environment(environ: Mapping[str, str] = os.environ) -> tuple[tuple[int, int], str] | None:
    """((K, N), where they came from) when this process is a task of a job array, else None:
      Slurm (sbatch --array=1-4, or 0-3): task K = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1 of
        N = SLURM_ARRAY_TASK_COUNT (a step, --array=0-6:2, is SLURM_ARRAY_TASK_STEP);
      a Kubernetes Indexed Job: K = JOB_COMPLETION_INDEX + 1 (Kubernetes sets it, from 0) of N =
        JOB_COMPLETIONS, which the Job sets in its pod's environment to its spec.completions (Kubernetes gives
        the pod no count of its own).
    A value missing, not a whole number or out of range, an array with gaps (--array=1,3,7), or both kinds
    at once is a ValueError that names the variables and says what to do."""
    slurm = {name: environ[name] for name in (*SLURM_ARRAY, "SLURM_ARRAY_TASK_STEP") if name in environ}
    kubernetes = {name: environ[name] for name in KUBERNETES_INDEX if name in environ}
    if slurm and kubernetes:
        raise ValueError(
            f"both a Slurm job array ({_shown_values(slurm)}) and a Kubernetes Indexed Job "
            f"({_shown_values(kubernetes)}) are in the environment: unset the one that is not running this task, "
            "or give SHARD=K/N yourself"
        )
    if slurm:
        _all_set(slurm, SLURM_ARRAY, "sbatch --array=1-4 sets them all")
        index, first = _whole_number(slurm, "SLURM_ARRAY_TASK_ID"), _whole_number(slurm, "SLURM_ARRAY_TASK_MIN")
        count, step = (
            _whole_number(slurm, "SLURM_ARRAY_TASK_COUNT", 1),
            _whole_number(slurm, "SLURM_ARRAY_TASK_STEP", 1),
        )
        if index < first or (index - first) % step or (index - first) // step >= count:
            raise ValueError(
                f"{_shown_values(slurm)}: this task is not one of a range of {count} tasks; autograding needs "
                "a plain range, e.g. sbatch --array=1-4 (not a list such as --array=1,3,7)"
            )
        return ((index - first) // step + 1, count), _shown_values(slurm)
    if kubernetes:
        _all_set(
            kubernetes,
            KUBERNETES_INDEX,
            "Kubernetes sets only the index: set JOB_COMPLETIONS in the Job's pod template to its spec.completions",
        )
        index, count = (
            _whole_number(kubernetes, "JOB_COMPLETION_INDEX"),
            _whole_number(kubernetes, "JOB_COMPLETIONS", 1),
        )
        if index >= count:
            raise ValueError(
                f"{_shown_values(kubernetes)}: the index counts from 0 to JOB_COMPLETIONS - 1; set JOB_COMPLETIONS "
                "in the Job's pod environment to the same number as its spec.completions"
            )
        return (index + 1, count), _shown_values(kubernetes)
    return None


def _all_set(values: dict[str, str], names: tuple[str, ...], advice: str) -> None:
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(
            f"{_shown_values(values)} is set but not {' or '.join(missing)}: {advice} (or give SHARD=K/N yourself)"
        )


def _whole_number(values: dict[str, str], name: str, least: int = 0) -> int:
    """values[name] (1 if unset: a job array's step) as a whole number of at least `least`, or a ValueError."""
    text = values.get(name, "1")
    if not text.strip().isdigit() or int(text) < least:
        raise ValueError(f"{name}={text!r}: a job array sets it to a whole number of at least {least}")
    return int(text)


def _shown_values(values: dict[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in values.items())


@contextmanager
def _warm_here(exercises: set[str]) -> Iterator[None]:
    """Within the block this process grades lessons warm: the references of `exercises` built and the re-check's
    warm runner (grading/warm_runner.py) and the kernels' zygote (warm_kernels.py) started, all before any learner's
    code runs; the runner and the zygote end with it. Nothing of that for quizzes (no exercise): their kernels
    import no torch."""
    if not exercises:
        yield
        return
    from mrcnn_course.teaching.grading import sealed  # torch: only when an exercise is graded
    from mrcnn_course.teaching.grading.warm_runner import stop_warm_runner

    for exercise in sorted(exercises):
        sealed.reference_for(exercise)
    _start_warm()
    try:
        yield
    finally:
        stop_warm_runner()
        warm_kernels.stop_zygote()


def _start_warm() -> None:
    """Start the re-check's warm runner (grading/warm_runner.py) and the lesson kernels' zygote (warm_kernels.py),
    before any learner's code runs."""
    from mrcnn_course.teaching.grading.warm_runner import warm_runner  # torch: only when an exercise is graded

    warm_runner()
    warm_kernels.start_zygote(nbgrader_steps.AUTOGRADING_ENV)


def _nothing_found(
    shown: str, everyone: list[str], chosen: list[str], shard: tuple[int, int], names: list[str] | None
) -> str:
    """Why there is nothing to grade, naming where autograding looked."""
    if not everyone:
        return (
            f"nothing handed in: {shown}/ holds no learner's folder. Put each learner's work in "
            f"{shown}/<learner>/<assignment>/<notebook>.ipynb (make exchange-collect NAME=..., "
            "nbgrader zip_collect, or by hand), then autograde again"
        )
    if not chosen:
        return (
            f"nothing to grade on shard {shard[0]}/{shard[1]}: {shown}/ holds {len(everyone)} learners "
            f"({', '.join(everyone)}), none of them this shard's"
        )
    folders = ", ".join(f"{shown}/{learner}/" for learner in chosen)
    what = " or ".join(names) if names else "an assignment"
    return f"nothing to grade: no folder named after {what} in {folders}"


def _grade(api: NbGraderAPI, learner: str, name: str) -> Outcome:
    """Autograde one submission (already in grading/submitted, its assignment in the gradebook) and
    write its feedback."""
    outcome = Outcome(learner, name)
    start = time.perf_counter()
    with warnings.catch_warnings():  # (catch_warnings(action=...) is Python 3.11+)
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own session notes
        result = api.autograde(name, learner, force=True)
    if result["success"]:
        _check(api.generate_feedback(name, learner, force=True), f"nbgrader generate_feedback {name} {learner}")
        with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
            submission = gradebook.find_submission(name, learner)
            outcome.score, outcome.max_score = submission.score, submission.max_score
    else:
        outcome.error = _error_lines(result)
    outcome.seconds = time.perf_counter() - start
    return outcome


_WORKER_API: NbGraderAPI | None = None  # one per worker process, made by _start_worker


def _start_worker(root: str, jobs: int, references: tuple[Path, str] | None) -> None:
    """A grading worker's start: its kernels' threads, nbgrader's API, and, when an exercise is graded, the
    re-check's references (read from the file the run wrote, sealed.load_references), its warm runner and its
    kernels' zygote."""
    global _WORKER_API
    from mrcnn_course.training.distributed import cpus_available  # here: the gradebook's steps need no torch

    # Each kernel's torch would otherwise start a thread per CPU: `jobs` kernels share the CPUs this process
    # may use (its affinity and its cgroup's quota: a container or taskset may allow fewer than the machine has).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(max(1, cpus_available() // jobs)))
    _WORKER_API = course_api(Path(root))
    if references is not None:  # lessons: warm, as in _warm_here (both end with this process)
        from mrcnn_course.teaching.grading import sealed

        sealed.load_references(*references)
        _start_warm()


def _grade_in_worker(submission: tuple[str, str]) -> Outcome:
    assert _WORKER_API is not None, "_start_worker runs first in every worker"
    return _grade(_WORKER_API, *submission)


def _exercises_checked(root: Path, names: list[str]) -> set[str]:
    """The exercises whose checks the graded cells of these assignments call (their notebooks in solutions/, whose
    graded cells the gradebook holds): what the re-check outside the kernel needs references for."""
    sources = [path.read_text() for name in names for path in (Path(root) / "solutions" / name).glob("*.ipynb")]
    if not any("grading.check_" in source for source in sources):
        return set()  # quizzes only: no need to import torch
    from mrcnn_course.teaching.grading import sealed

    return {exercise for source in sources for exercise in sealed.exercises_checked(nbformat.reads(source, 4))}


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
