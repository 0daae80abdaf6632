"""Hidden tests that a learner's cells cannot fool: every graded exercise checked again, outside the
learner's kernel, after nbgrader has run the notebook, by the same judge as the check in the kernel (judge.py).

In the learner's kernel everything is theirs to change: a cell can rebind grading.check_nms, patch
torch.equal, or capture torchvision's operator (`_OP = torch.ops.torchvision.nms.default`) before a
checker switches it off. So autograding (nbgrader_steps.AutogradingExecute) calls verify_notebook(nb,
folder) once the notebook has run, and it:
  1. finds each graded test cell's checks, `grading.check_<name>(<function>, ...)` (the cells are locked:
     nbgrader restores their source from the gradebook);
  2. takes each exercise's cases, hidden ones included, their expected outputs (the package's reference)
     and the package's time on the speed case (speed.package_seconds) from this process's references
     (reference_for): built once per grading run, in a process that never runs a learner's code, and
     handed to the grading workers in a file read with torch.load(weights_only=True), whose SHA-256 they
     check (save_references, load_references);
  3. has a fresh process run the learner's code: a child forked, per notebook, from the warm runner
     (warm_runner.py: a server started once per grading process, with torch, the package and every case
     ready, that never runs a learner's code itself). The child, in the notebook's folder, executes the
     notebook's definitions cell by cell (solution cells whole; of the other code cells only imports, defs,
     classes and assignments without calls: no pictures, no training), each cell within CELL_TIME_LIMIT: a
     cell that keeps running at its top level (an endless loop, training left there) is stopped and counts
     as not run (by the child's own alarm; what that cannot stop, by the watcher, _run_watched, which kills
     the child and forks another without the cell), so that only the exercises that need what it defines
     fail (warm_runner._names_needed says which). The child runs each learner function on the cases with
     judge.run_cases: the reference switched off (guard.py), every torchvision operator refused at the
     dispatcher (any route, a captured overload included), every run of the reference's own Python code
     noticed (guard.reference_noticed); it times the speed case against the package's time of the grading
     run (a ratio over the limit is measured again, alternately: speed.py).
     It hands back outcomes only, read here with torch.load(weights_only=True): tensors, numbers, text;
  4. judges them here with judge.first_failure (the module as imported here, before any learner code),
     and returns, per grade cell, why it fails; AutogradingExecute adds that as the cell's error output,
     so nbgrader scores the cell 0 whatever the kernel printed.
Nothing passes from one learner's child to the next: each is a new fork of the warm runner, whose memory no
learner code has touched. The runner and its children run torch on one thread (warm_runner.py says why), and
the expected outputs are computed here on one thread too.
What it leaves out: a learner who attacks this runner itself (it runs their code, and could be lied to
by code written against it); a learner's helper that fails its own check is not replaced by the
package's here, as the check in the kernel does (core.py): the function is judged as it is. A stopped cell
counts as not run at all, though in the kernel what it defined before its loop exists: the exercises that
need it fail here even when their check passed in the kernel.
"""

import ast
import hashlib
import io
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrcnn_course.teaching.grading.core import _wrapped, has_speed_case
from mrcnn_course.teaching.grading.exercise import Case, every_exercise
from mrcnn_course.teaching.grading.judge import RAISED, RAN_THE_REFERENCE, Outcome, expected_outputs, first_failure
from mrcnn_course.teaching.grading.speed import MAX_RATIO, one_thread, package_seconds, step_inputs
from mrcnn_course.teaching.grading.warm_runner import Runner, hidden_cases, warm_runner

CHECK_CALL = re.compile(r"grading\.check_(\w+)\(\s*(\w+)")
RUNNER_SLACK = 300.0  # seconds for the runner beyond the exercises' own time limits (the speed cases)
# Seconds for one cell's definitions in the runner. Defining functions takes milliseconds and the lessons'
# import cells well under a second, so only work left at a cell's top level runs this long; the margin is
# for a busy grading machine (a cell stopped wrongly costs a learner marks), and stopping an endless loop
# here adds little to the Execute.timeout the same loop already cost in the kernel.
CELL_TIME_LIMIT = 10.0
# Seconds the watcher waits beyond CELL_TIME_LIMIT before it kills the runner: the runner's own alarm stops a
# plain loop at CELL_TIME_LIMIT, without the cost of a new runner; the watcher stops what the alarm cannot.
WATCH_GRACE = 5.0
WATCH_INTERVAL = 0.1  # seconds between the watcher's looks at which cell the runner is defining
REFERENCES_FILE = "references.pt"  # in the folder a grading run gives save_references


def checks_of(nb) -> dict[str, list[tuple[str, str]]]:
    """grade cell id -> [(exercise name, learner function's name), ...] of the checks it calls."""
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            calls = sorted({(n, f) for n, f in CHECK_CALL.findall(cell.source) if n in every_exercise()})
            if calls:
                found[meta["grade_id"]] = calls
    return found


def definitions(nb) -> list[tuple[str, str]]:
    """The code the runner executes, one (how a learner finds the cell, its code) per cell, in order:
    solution cells whole; of the other code cells (grade cells excepted), the imports, function and class
    definitions and call-free assignments (BLOCK = 128)."""
    sources = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        if meta.get("solution"):
            sources.append((_cell_label(cell.source, "your answer cell"), cell.source))
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics: not definitions
            continue
        kept: list[ast.stmt] = [
            node
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
            or (isinstance(node, ast.Assign) and not any(isinstance(n, ast.Call) for n in ast.walk(node.value)))
        ]
        if kept:
            sources.append((_cell_label(cell.source, "your cell"), ast.unparse(ast.Module(body=kept, type_ignores=[]))))
    return sources


def _cell_label(source: str, kind: str) -> str:
    """How a message names a cell: "your answer cell for nms" (the functions it defines), else by its first line."""
    try:
        functions = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    except SyntaxError:
        functions = []
    if functions:
        return f"{kind} for {' and '.join(functions)}"
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return f'{kind} that starts "{first[:40]}"'


def exercises_checked(nb) -> set[str]:
    """The exercises whose checks a notebook's graded test cells call (what its re-check needs references for)."""
    return {name for calls in checks_of(nb).values() for name, _ in calls}


# ----- what the re-check compares with: built once per grading run -----


@dataclass(frozen=True)
class Reference:
    """What an exercise's re-check compares a learner's outcomes with."""

    cases: list[Case]  # judge.build_cases(exercise, extra=True): hidden ones included
    expected: list  # the package's output on each case (judge.expected_outputs), on one thread, as the runner's
    package_seconds: float | None  # the package's CPU seconds per call on the speed case; None: none


# This process's references: exercise -> {"expected": [...], "package_seconds": float | None}, plain data (what
# save_references writes); the cases are rebuilt here from the exercise's declaration (they hold functions).
_MEASURED: dict[str, dict[str, Any]] = {}


def reference_for(name: str) -> Reference:
    """Exercise `name`'s Reference: loaded (load_references) or built here on first use, then kept."""
    cases = hidden_cases(name)
    if name not in _MEASURED:
        _MEASURED[name] = _measure(name)
    return Reference(cases, **_MEASURED[name])


def _measure(name: str) -> dict[str, Any]:
    """Exercise `name`'s expected outputs and the package's time on its speed case, on one thread."""
    exercise = every_exercise()[name]
    with one_thread():
        expected = expected_outputs(exercise, hidden_cases(name))
    inputs = step_inputs().get(exercise.writes) if has_speed_case(exercise) else None
    seconds = package_seconds(exercise.reference_function(), inputs.args) if inputs else None
    return {"expected": expected, "package_seconds": seconds}


def save_references(names: Iterable[str], folder: str | os.PathLike) -> tuple[Path, str]:
    """Build the references of the exercises `names` here and write them to folder/REFERENCES_FILE, read-only:
    (the file, its SHA-256), for the workers of a grading run to load (load_references). The folder should be
    the grading run's own (tempfile.mkdtemp): the digest, kept out of any file, shows a change all the same."""
    chosen = sorted(names)
    for name in chosen:
        reference_for(name)
    data = io.BytesIO()
    torch.save({name: _MEASURED[name] for name in chosen}, data)
    path = Path(folder) / REFERENCES_FILE
    path.write_bytes(data.getvalue())
    path.chmod(0o400)
    return path, hashlib.sha256(data.getvalue()).hexdigest()


def load_references(path: str | os.PathLike, digest: str) -> None:
    """Take the references save_references wrote into this process (reference_for then uses them). A file whose
    SHA-256 is not `digest` (changed since: a learner's code runs as the same user) or that holds anything but
    plain data is not used: a warning says so, and this process builds its own references instead."""
    try:
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError("it changed after the grading run wrote it")
        loaded = torch.load(io.BytesIO(data), weights_only=True)  # the bytes checked, not the file read again
    except Exception as error:  # noqa: BLE001 (whatever was done to the file, the grading goes on)
        warnings.warn(
            f"the re-check's references in {path} were not used ({error}); this process builds its own",
            stacklevel=2,
        )
        return
    _MEASURED.update(loaded)


def verify_notebook(nb, folder: str | os.PathLike, timeout: float | None = None) -> dict[str, str]:
    """grade cell id -> why its exercise fails, re-checked outside the kernel (see the module docstring);
    a cell whose checks all pass is not in it."""
    checks = checks_of(nb)
    if not checks:
        return {}
    references = {name: reference_for(name) for name in exercises_checked(nb)}
    jobs: list[dict[str, Any]] = [
        {"cell": cell_id, "name": name, "function": function, "package_seconds": references[name].package_seconds}
        for cell_id, calls in checks.items()
        for name, function in calls
    ]
    limit = timeout or RUNNER_SLACK + sum(
        every_exercise()[name].time_limit for calls in checks.values() for name, _ in calls
    )
    with tempfile.TemporaryDirectory(prefix="sealed-") as run_folder:
        try:
            problem = _run_watched(Path(run_folder), folder, definitions(nb), jobs, limit)
        except subprocess.TimeoutExpired:
            problem = f"the runner took longer than {limit:.0f} s"
        try:
            results = torch.load(Path(run_folder) / "results.pt", weights_only=True) if problem is None else {}
        except Exception as error:  # noqa: BLE001 (whatever the learner's code left in the file)
            problem = f"its results could not be read ({type(error).__name__})"
            results = {}
    verdicts: dict[str, str] = {}
    for cell_id, calls in checks.items():
        reasons = []
        for name, _ in calls:
            result = results.get(f"{cell_id}/{name}")
            if isinstance(result, dict) and isinstance(result.get("stopped"), str):
                reasons.append(_stopped_message(name, result["stopped"]))
                continue
            reason = problem or _judge(name, references[name].cases, references[name].expected, result)
            if reason:
                reasons.append(f"check_{name}, run again outside your notebook's kernel: {reason}")
        if reasons:
            verdicts[cell_id] = "\n".join(reasons)
    return verdicts


def _run_watched(run_folder: Path, folder: str | os.PathLike, cells: list[tuple[str, str]], jobs: list, limit: float):
    """Run a fresh runner on `cells` (definitions) and `jobs` until it finishes, within `limit` seconds in all
    (else subprocess.TimeoutExpired). The runner stops a cell that runs past CELL_TIME_LIMIT itself; one still
    running WATCH_GRACE later (a loop that catches the runner's exception, one long tensor operation) is
    stopped here: the runner is killed and another started without that cell, which it then names to the
    exercises that need it. Returns why the runner failed (its last words), or None once it has written
    results.pt."""
    deadline = time.monotonic() + limit
    stopped: dict[int, str] = {}  # cell index -> its label
    while True:
        work = {"definitions": cells, "stopped": stopped, "cell_time_limit": CELL_TIME_LIMIT, "jobs": jobs}
        torch.save(work, run_folder / "jobs.pt")
        (run_folder / "defining").unlink(missing_ok=True)
        (run_folder / "stopped").write_text("")
        runner = warm_runner().start(run_folder, folder)
        stuck = _watch(runner, run_folder / "defining", deadline, limit)
        if stuck is None:
            if runner.returncode == 0:
                return None
            stderr = run_folder / "stderr.txt"
            last_words = stderr.read_text(errors="replace").strip()[-800:] if stderr.is_file() else ""
            return f"the runner stopped: {last_words or f'exit code {runner.returncode}'}"
        # this cell, and those the runner stopped itself before it (no need to wait for them again)
        for index in [stuck, *map(int, (run_folder / "stopped").read_text().split())]:
            stopped[index] = cells[index][0]


def _watch(runner: Runner, defining: Path, deadline: float, limit: float) -> int | None:
    """Wait for the runner to end; kill it if the cell it is defining (the number it writes in `defining`)
    takes longer than CELL_TIME_LIMIT + WATCH_GRACE, and return that cell's index, or past `deadline`
    (TimeoutExpired)."""
    cell, since = None, time.monotonic()
    while runner.poll(WATCH_INTERVAL) is None:
        now = time.monotonic()
        try:
            current: int | None = int(defining.read_text())
        except (OSError, ValueError):  # not written yet, or removed once every cell is defined
            current = None
        if current != cell:
            cell, since = current, now
        if now > deadline or (cell is not None and now - since > CELL_TIME_LIMIT + WATCH_GRACE):
            runner.kill()
            if now > deadline:
                raise subprocess.TimeoutExpired("the re-check's runner", limit)
            return cell
    return None


def _stopped_message(name: str, cell: str) -> str:
    """Why check_<name> fails when the runner stopped `cell`, which defines what it needs: in lines of at most
    MESSAGE_WIDTH, the first one after nbgrader's "HiddenCheckFailed: "."""
    return _wrapped(
        f"check_{name}, run again outside your notebook's kernel: {cell} kept running at the top level and was "
        f"stopped after {CELL_TIME_LIMIT:g} s: put the work inside a function, or delete it (at grading, a "
        f"cell is run only to define what it holds).",
        first=len("HiddenCheckFailed: "),
    )


def _judge(name: str, cases: list[Case], expected: list, result: dict | None) -> str | None:
    """Why the runner's result for exercise `name` fails (judge.first_failure, then the speed case), or None."""
    if not isinstance(result, dict):
        return "no result came back"
    if result.get("missing"):
        return result["missing"]
    exercise = every_exercise()[name]
    try:
        outcomes = [Outcome(kind, output, detail) for kind, output, detail in result.get("outcomes", [])]
    except (TypeError, ValueError):  # not what run_learner writes
        return "its outcomes could not be read"
    failure = first_failure(exercise, cases, expected, outcomes)
    if failure is not None:
        case, outcome = failure.case.name, failure.outcome
        if failure.difference is not None:
            return f"case '{case}' differs in {failure.difference.where}: {failure.difference.detail}"
        if outcome.kind == RAISED:
            return f"case '{case}': your {name} raised {outcome.detail}"
        if outcome.kind == RAN_THE_REFERENCE:
            return f"case '{case}': your {name} ran the reference ({outcome.detail}): write your own"
        return f"case '{case}': your {name} changed its input {outcome.detail} in place"
    if len(outcomes) != len(cases):
        return "not every case ran"
    ratio = result.get("speed")
    if isinstance(ratio, float) and ratio > MAX_RATIO:
        return f"the speed case: {ratio:.1f}x slower than the package's (the limit is {MAX_RATIO:g}x)"
    if isinstance(result.get("slow"), str):  # stopped, far too slow, or raised
        return f"the speed case: {result['slow'].splitlines()[0][:400]}"
    return None
