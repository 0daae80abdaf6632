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
  3. has a fresh process run the learner's code: the warm runner (WarmRunner, started once per grading
     process, `python -m mrcnn_course.teaching.grading.sealed --serve`) has torch, the package and every
     case ready and never runs a learner's code itself; per notebook it forks a child, in the notebook's
     folder, that executes the notebook's definitions cell by cell (solution cells whole; of the other code
     cells only imports, defs, classes and assignments without calls: no pictures, no training), each cell
     within CELL_TIME_LIMIT: a cell that keeps running at its top level (an endless loop, training left
     there) is stopped and counts as not run (by the child's own alarm; what that cannot stop, by the
     watcher, _run_watched, which kills the child and forks another without the cell), so that only the
     exercises that need what it defines fail (_names_needed says which). The child runs each learner
     function on the cases with judge.run_cases: the reference switched off (guard.py), every torchvision
     operator refused at the dispatcher (any route, a captured overload included), every run of the
     reference's own Python code noticed (guard.reference_noticed); it times the speed case against the
     package's time of the grading run (a ratio over the limit is measured again, alternately: speed.py).
     It hands back outcomes only, read here with torch.load(weights_only=True): tensors, numbers, text;
  4. judges them here with judge.first_failure (the module as imported here, before any learner code),
     and returns, per grade cell, why it fails; AutogradingExecute adds that as the cell's error output,
     so nbgrader scores the cell 0 whatever the kernel printed.
Nothing passes from one learner's child to the next: each is a new fork of the warm runner, whose memory no
learner code has touched, and the runner, the children and the cases run torch on one thread (the grading
workers share the CPUs; and a process that forks must not have started torch's thread pool).
What it leaves out: a learner who attacks this runner itself (it runs their code, and could be lied to
by code written against it); a learner's helper that fails its own check is not replaced by the
package's here, as the check in the kernel does (core.py): the function is judged as it is. A stopped cell
counts as not run at all, though in the kernel what it defined before its loop exists: the exercises that
need it fail here even when their check passed in the kernel.
"""

import ast
import atexit
import builtins
import dis
import hashlib
import io
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mrcnn_course.teaching.grading.core import _wrapped, has_speed_case, speed_case
from mrcnn_course.teaching.grading.exercise import Case, every_exercise
from mrcnn_course.teaching.grading.guard import TimeLimitExceeded, reference_code, time_limit
from mrcnn_course.teaching.grading.judge import (
    OK,
    RAISED,
    RAN_THE_REFERENCE,
    Outcome,
    build_cases,
    expected_outputs,
    first_failure,
    learner_function,
    run_cases,
)
from mrcnn_course.teaching.grading.speed import MAX_RATIO, one_thread, package_seconds, step_inputs

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
# The warm runner's environment: a notebook's, as under nbgrader (AUTOGRADING=1), and torch on one thread
RUNNER_ENV = {"AUTOGRADING": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
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
# save_references writes), and the cases, rebuilt here from the exercise's declaration (they hold functions).
_MEASURED: dict[str, dict[str, Any]] = {}
_CASES: dict[str, list[Case]] = {}


def reference_for(name: str) -> Reference:
    """Exercise `name`'s Reference: loaded (load_references) or built here on first use, then kept."""
    if name not in _CASES:
        _CASES[name] = build_cases(every_exercise()[name], extra=True)
    if name not in _MEASURED:
        _MEASURED[name] = _measure(name)
    return Reference(_CASES[name], **_MEASURED[name])


def _measure(name: str) -> dict[str, Any]:
    """Exercise `name`'s expected outputs and the package's time on its speed case, on one thread."""
    exercise = every_exercise()[name]
    with one_thread():
        expected = expected_outputs(exercise, _CASES[name])
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


def _watch(runner: "Runner", defining: Path, deadline: float, limit: float) -> int | None:
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


# ----- the warm runner: one per grading process, a fresh fork per notebook -----


class WarmRunner:
    """The warm runner's server process (serve, in a Python of its own), as the grading process sees it: start()
    has it fork a fresh runner for a notebook. A server that has ended (killed, out of memory) is started again."""

    def __init__(self) -> None:
        self._server = self._start_server()
        self._pending = b""  # what the server wrote after the last full line read

    @staticmethod
    def _start_server() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mrcnn_course.teaching.grading.sealed", "--serve"],
            env={**os.environ, **RUNNER_ENV},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # its replies; its own errors go to this process's stderr
        )

    def start(self, run_folder: Path, folder: str | os.PathLike) -> "Runner":
        """A fresh runner, forked for the work in run_folder/jobs.pt, run in the notebook's `folder`. A server that
        has ended (a learner's runner may kill it) is started again, once."""
        request = json.dumps({"run_folder": str(run_folder), "folder": str(Path(folder).resolve())}) + "\n"
        for attempt in range(2):
            if attempt or self._server.poll() is not None:
                self._server.kill()
                self._server.wait()
                self._server, self._pending = self._start_server(), b""
            try:
                assert self._server.stdin is not None  # a pipe (Popen)
                self._server.stdin.write(request.encode())
                self._server.stdin.flush()
                word, number = self.reply(None).split()
            except (OSError, EOFError):
                continue
            return Runner(self, int(number)) if word == "started" else Runner(self, None, returncode=int(number))
        return Runner(self, None, returncode=1)  # the server cannot start: its error is on this process's stderr

    def reply(self, timeout: float | None) -> str:
        """The server's next line, waiting at most `timeout` seconds (None: as long as it takes); "" if none came
        in time. EOFError once the server has ended."""
        stdout = self._server.stdout
        assert stdout is not None  # a pipe (Popen)
        while b"\n" not in self._pending:
            if not select.select([stdout], [], [], timeout)[0]:
                return ""
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise EOFError("the warm runner ended")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        """End the server (it ends when its input does) and wait for it."""
        if self._server.poll() is None:
            assert self._server.stdin is not None  # a pipe (Popen)
            self._server.stdin.close()
            self._server.wait()


class Runner:
    """One forked runner, as _watch sees it (like a subprocess.Popen): poll, kill, returncode."""

    def __init__(self, server: WarmRunner, pid: int | None, returncode: int | None = None) -> None:
        self.server, self.pid, self.returncode = server, pid, returncode

    def poll(self, timeout: float | None = 0.0) -> int | None:
        """Its exit code once it has ended (waiting at most `timeout` seconds for that), else None."""
        if self.returncode is None:
            try:
                line = self.server.reply(timeout)
            except EOFError:  # the server ended with it
                line = "ended 1"
            if line:
                self.returncode = int(line.split()[1])
        return self.returncode

    def kill(self) -> None:
        """Kill it and wait for its end. The server reaps a runner only when the next one is asked for, so until
        then its process id cannot have gone to another process."""
        if self.returncode is None and self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # the server ended, and reaped it
                pass
            self.poll(None)


_WARM_RUNNER: list[WarmRunner] = []  # this process's, while it runs


def warm_runner() -> WarmRunner:
    """This process's warm runner, started on first use (course.autograde starts it before grading anyone); it
    ends with stop_warm_runner, or when this process ends."""
    if not _WARM_RUNNER:
        _WARM_RUNNER.append(WarmRunner())
        atexit.register(stop_warm_runner)
    return _WARM_RUNNER[0]


def stop_warm_runner() -> None:
    """End this process's warm runner, if it has one (the next warm_runner() starts another)."""
    if _WARM_RUNNER:
        _WARM_RUNNER.pop().close()
        atexit.unregister(stop_warm_runner)


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


def serve() -> None:
    """The warm runner's server (`python -m mrcnn_course.teaching.grading.sealed --serve`): for each request on
    its input, one JSON line {"run_folder", "folder"}, it prepares the work in run_folder/jobs.pt (the cases, the
    reference's code objects, the speed cases' inputs: kept for later requests), forks a runner (run_learner)
    and answers "started PID", then "ended CODE" when the runner has ended ("ended 1" at once if the work could
    not be prepared, the reason in run_folder/stderr.txt). It never runs a learner's code itself."""
    torch.set_num_threads(1)  # before any work: a process that forks must not have started torch's thread pool
    ended: int | None = None  # the last runner, ended but not reaped (Runner.kill)
    for line in sys.stdin:
        if ended is not None:
            os.waitpid(ended, 0)
        request = json.loads(line)
        run_folder = Path(request["run_folder"])
        try:
            work = torch.load(run_folder / "jobs.pt", weights_only=True)  # verify_notebook wrote plain data
            ready = _ready(work)
        except Exception:  # noqa: BLE001 (said in the runner's place)
            (run_folder / "stderr.txt").write_text(traceback.format_exc())
            ended = None
            _answer("ended 1")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the runner
            code = 1
            try:
                _fresh_runner(run_folder, request["folder"])
                run_learner(run_folder, work, *ready)
                code = 0
            except BaseException:  # noqa: BLE001 (its last words, for the grader)
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _answer(f"started {pid}")
        ended = pid
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # ended, still not reaped
        assert status is not None  # waitid without WNOHANG waits
        _answer(f"ended {status.si_status if status.si_code == os.CLD_EXITED else -status.si_status}")
    if ended is not None:
        os.waitpid(ended, 0)


def _answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _ready(work: dict) -> tuple[dict, dict, dict]:
    """What the runner of `work` needs from before any learner code runs, each by exercise name: the cases, the
    reference's code objects, the reference itself; and the speed cases' inputs (speed.step_inputs), built here
    once for every runner of this server."""
    exercises = {job["name"]: every_exercise()[job["name"]] for job in work["jobs"]}
    for name in exercises:
        if name not in _CASES:
            _CASES[name] = build_cases(exercises[name], extra=True)
    if any(job["package_seconds"] is not None for job in work["jobs"]):
        step_inputs()
    forbidden = {
        name: reference_code(e.component, e.torchvision_names, e.reference_function()) for name, e in exercises.items()
    }
    references = {name: e.reference_function() for name, e in exercises.items()}
    return {name: _CASES[name] for name in exercises}, forbidden, references


def _fresh_runner(run_folder: Path, folder: str) -> None:
    """Make a forked runner what a new process would be: in the notebook's folder, its own input, output and error
    (nothing, nothing, run_folder/stderr.txt, never the server's pipes), torch's generator at its start and
    Python's seeded afresh."""
    os.chdir(folder)
    nothing = os.open(os.devnull, os.O_RDWR)
    os.dup2(nothing, 0)
    os.dup2(nothing, 1)  # a learner's prints; to a file or pipe, an endless print could fill it
    errors = os.open(run_folder / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(errors, 2)
    os.close(nothing)
    os.close(errors)
    torch.manual_seed(torch.initial_seed())
    random.seed()


def run_learner(run_folder: Path, work: dict, cases: dict, forbidden: dict, references: dict) -> None:
    """The runner (a fork of the warm runner, in the notebook's folder): define the learner's functions, cell by
    cell, stopping a cell that runs longer than the cell time limit; run them on the jobs' cases
    (judge.run_cases), time the speed cases, save the outcomes to results.pt."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    stopped: dict[int, str] = dict(work["stopped"])  # cell index -> label: the watcher's, then this runner's
    defining = run_folder / "defining"  # which cell runs now, for the watcher (_watch)
    for index, (label, source) in enumerate(work["definitions"]):
        if index in stopped:
            continue
        defining.write_text(str(index))
        before = dict(namespace)
        try:
            with time_limit(work["cell_time_limit"], f"{label} kept running"):
                exec(compile(source, "<notebook>", "exec"), namespace)  # noqa: S102 (the learner's own notebook)
        except TimeLimitExceeded:  # stopped: as if it had not run, the same as when the watcher stops a cell
            namespace.clear()
            namespace.update(before)  # in place: the notebook's functions keep this dict as their globals
            stopped[index] = label
            with open(run_folder / "stopped", "a") as told:  # for the watcher, if it restarts the runner
                told.write(f"{index} ")
        except BaseException:  # noqa: BLE001, S110 (a cell that fails defines what it defined before failing)
            pass
    defining.unlink(missing_ok=True)
    # a name a stopped cell would have defined, and no other cell did -> that cell's label
    lost = {
        name: label
        for index, label in sorted(stopped.items(), reverse=True)  # the first such cell names it
        for name in _top_level_names(work["definitions"][index][1])
        if name not in namespace
    }
    results: dict[str, dict[str, Any]] = {}
    for job in work["jobs"]:
        exercise, fn = every_exercise()[job["name"]], learner_function(namespace.get(job["function"]))
        key = f"{job['cell']}/{job['name']}"
        needed_and_lost = [lost[n] for n in [job["function"], *sorted(_names_needed(fn, namespace))] if n in lost]
        if needed_and_lost:
            results[key] = {"stopped": needed_and_lost[0]}
            continue
        if not callable(fn):
            results[key] = {"missing": f"no function named {job['function']} was defined"}
            continue
        outcomes = run_cases(exercise, fn, cases[job["name"]], forbidden[job["name"]])
        timing, slow = None, None
        if all(o.kind == OK for o in outcomes):
            try:
                timing, slow = speed_case(exercise, fn, references[job["name"]], job["package_seconds"])
            except Exception as error:  # noqa: BLE001 (the learner's code raised on the speed case's inputs)
                slow = f"your {exercise.component} raised {type(error).__name__}: {str(error)[:300]}"
        results[key] = {
            "outcomes": [(o.kind, _plain(o.output), o.detail) for o in outcomes],
            "speed": None if timing is None else float(timing.ratio),
            "slow": slow,
        }
    torch.save(results, run_folder / "results.pt")


def _top_level_names(source: str) -> set[str]:
    """The names a cell binds at its top level: functions, classes, imports, assignment and loop targets
    (not the local names inside its functions)."""
    try:
        pending: list[ast.AST] = list(ast.parse(source).body)
    except SyntaxError:
        return set()
    names = set()
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif not isinstance(node, ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return names


def _names_needed(fn: Callable | None, namespace: dict[str, Any]) -> set[str]:
    """The global names `fn` uses, and those of the notebook's functions it uses, and theirs (its helpers):
    read from the code, whether or not a case takes that branch. Empty when fn is not the notebook's."""
    needed: set[str] = set()
    pending, seen = [fn], set()
    while pending:
        function = pending.pop()
        if getattr(function, "__globals__", None) is not namespace or id(function) in seen:
            continue  # not written in the notebook (a module's function, a class, a number), or seen
        seen.add(id(function))
        names = _globals_loaded(function.__code__)  # type: ignore[union-attr]  # a notebook function
        needed |= names
        pending += [namespace[name] for name in names if name in namespace]
    return needed - set(vars(builtins))


def _globals_loaded(code: types.CodeType) -> set[str]:
    """The global names a code object, and the code nested in it (inner functions, lambdas), load."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _globals_loaded(constant)
    return names


def _plain(value: Any) -> Any:
    """What torch.load(weights_only=True) reads back: tensors, numbers, text, None, and lists/dicts of them."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit("usage: python -m mrcnn_course.teaching.grading.sealed --serve (the grading process starts it)")
    serve()
