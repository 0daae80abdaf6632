"""The warm runner: the process that runs a learner's code for the re-check at autograding (sealed.py), so
that the grading process never does.

A server (serve, `python -m mrcnn_course.teaching.grading.warm_runner --serve`) is started once per grading
process (warm_runner(); course.autograde starts it before grading anyone). It imports torch and the package,
keeps torch on one thread (a process that forks must not have started torch's thread pool; the grading workers
share the CPUs), and keeps what each request needs from before any learner code runs (_ready): the cases of
the exercises it has been asked about, the reference's code objects, the speed cases' inputs. It never runs a
learner's code itself: per notebook it forks a child, the runner (run_learner), made what a new process would
be (_fresh_runner: in the notebook's folder, its prints thrown away, its errors in a file, torch's and
Python's generators afresh). Nothing passes from one learner's runner to the next: each is a fork of a server
whose memory no learner code has touched.

The server speaks to the grading process (WarmRunner, Runner) by its input and output and by files:
  - a request, one JSON line on its input, {"run_folder": ..., "folder": the notebook's}, is answered on its
    output "started PID" once the runner is forked, then "ended CODE" once it has ended (CODE negative: killed
    by that signal; "ended 1" at once when the work could not be prepared);
  - in run_folder: jobs.pt, the work (sealed._run_watched writes it: the notebook's definitions, the cells
    already stopped, the cell time limit, the jobs), read with torch.load(weights_only=True); results.pt, the
    runner's outcomes per job, plain data (_plain) that the grading process reads the same way; defining, the
    index of the cell the runner is defining, for the watcher (sealed._watch); stopped, the cells the runner's
    own alarm stopped; stderr.txt, the runner's last words.
What it leaves out: a learner's code that attacks the runner it runs in (it can patch run_learner's names
through __main__, or kill the server) can lie about its own notebook, never about the next one's: a server
that has ended is started again (WarmRunner.start).
"""

import ast
import atexit
import builtins
import dis
import json
import os
import random
import select
import signal
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mrcnn_course.teaching.grading.core import speed_case
from mrcnn_course.teaching.grading.exercise import Case, every_exercise
from mrcnn_course.teaching.grading.guard import TimeLimitExceeded, reference_code, time_limit
from mrcnn_course.teaching.grading.judge import OK, build_cases, learner_function, run_cases
from mrcnn_course.teaching.grading.speed import step_inputs

# The warm runner's environment: a notebook's, as under nbgrader (AUTOGRADING=1), and torch on one thread
RUNNER_ENV = {"AUTOGRADING": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
_CASES: dict[str, list[Case]] = {}  # this process's cases, by exercise (hidden_cases)


def hidden_cases(name: str) -> list[Case]:
    """Exercise `name`'s cases, hidden ones included (judge.build_cases(exercise, extra=True)): built in this
    process on first use, then kept. The grading process compares with them (sealed.reference_for); the
    server builds them once for all its runners (_ready)."""
    if name not in _CASES:
        _CASES[name] = build_cases(every_exercise()[name], extra=True)
    return _CASES[name]


class WarmRunner:
    """The warm runner's server process (serve, in a Python of its own), as the grading process sees it: start()
    has it fork a fresh runner for a notebook. A server that has ended (killed, out of memory) is started again."""

    def __init__(self) -> None:
        self._server = self._start_server()
        self._pending = b""  # what the server wrote after the last full line read

    @staticmethod
    def _start_server() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "mrcnn_course.teaching.grading.warm_runner", "--serve"],
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
    """One forked runner, as the watcher (sealed._watch) sees it (like a subprocess.Popen): poll, kill, returncode."""

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


def serve() -> None:
    """The warm runner's server (`python -m mrcnn_course.teaching.grading.warm_runner --serve`): for each request
    on its input, one JSON line {"run_folder", "folder"}, it prepares the work in run_folder/jobs.pt (the cases,
    the reference's code objects, the speed cases' inputs: kept for later requests), forks a runner (run_learner)
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
            work = torch.load(run_folder / "jobs.pt", weights_only=True)  # sealed.verify_notebook wrote plain data
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
    cases = {name: hidden_cases(name) for name in exercises}
    if any(job["package_seconds"] is not None for job in work["jobs"]):
        step_inputs()
    forbidden = {
        name: reference_code(e.component, e.torchvision_names, e.reference_function()) for name, e in exercises.items()
    }
    references = {name: e.reference_function() for name, e in exercises.items()}
    return cases, forbidden, references


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
    defining = run_folder / "defining"  # which cell runs now, for the watcher (sealed._watch)
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
        sys.exit("usage: python -m mrcnn_course.teaching.grading.warm_runner --serve (the grading process starts it)")
    serve()
