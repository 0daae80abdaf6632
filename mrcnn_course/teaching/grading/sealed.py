"""Hidden tests that a learner's cells cannot fool: every graded exercise checked again, outside the
learner's kernel, after nbgrader has run the notebook, by the same judge as the check in the kernel (judge.py).

In the learner's kernel everything is theirs to change: a cell can rebind grading.check_nms, patch
torch.equal, or capture torchvision's operator (`_OP = torch.ops.torchvision.nms.default`) before a
checker switches it off. So autograding (nbgrader_steps.AutogradingExecute) calls verify_notebook(nb,
folder) once the notebook has run, and it:
  1. finds each graded test cell's checks, `grading.check_<name>(<function>, ...)` (the cells are locked:
     nbgrader restores their source from the gradebook);
  2. builds each exercise's cases, hidden ones included, and their expected outputs with the package's
     reference, here, in the autograder's own process, which never runs a learner's code;
  3. starts a fresh Python (`python -m mrcnn_course.teaching.grading.sealed RUN_FOLDER`, run_learner) that
     executes the notebook's definitions cell by cell (solution cells whole; of the other code cells only
     imports, defs, classes and assignments without calls: no pictures, no training), each cell within
     CELL_TIME_LIMIT: a cell that keeps running at its top level (an endless loop, training left there) is
     stopped and counts as not run (by the runner's own alarm; what that cannot stop, by the watcher,
     _run_watched, which kills the runner and starts it again without the cell), so that only the
     exercises that need what it defines fail (_names_needed says which), then runs each learner
     function on the cases with judge.run_cases: the reference switched off (guard.py), every torchvision
     operator refused at the dispatcher (any route, a captured overload included), every run of the
     reference's own Python code noticed (guard.reference_noticed); it times the speed case too (speed.py).
     It hands back outcomes only, read here with torch.load(weights_only=True): tensors, numbers, text;
  4. judges them here with judge.first_failure (the module as imported here, before any learner code),
     and returns, per grade cell, why it fails; AutogradingExecute adds that as the cell's error output,
     so nbgrader scores the cell 0 whatever the kernel printed.
What it leaves out: a learner who attacks this runner itself (it runs their code, and could be lied to
by code written against it); a learner's helper that fails its own check is not replaced by the
package's here, as the check in the kernel does (core.py): the function is judged as it is. A stopped cell
counts as not run at all, though in the kernel what it defined before its loop exists: the exercises that
need it fail here even when their check passed in the kernel.
"""

import ast
import builtins
import dis
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mrcnn_course.teaching.grading.core import _wrapped, speed_case
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
from mrcnn_course.teaching.grading.speed import MAX_RATIO

CHECK_CALL = re.compile(r"grading\.check_(\w+)\(\s*(\w+)")
RUNNER_SLACK = 300.0  # seconds for the runner beyond the exercises' own time limits (imports, the speed cases)
# Seconds for one cell's definitions in the runner. Defining functions takes milliseconds and the lessons'
# import cells well under a second, so only work left at a cell's top level runs this long; the margin is
# for a busy grading machine (a cell stopped wrongly costs a learner marks), and stopping an endless loop
# here adds little to the Execute.timeout the same loop already cost in the kernel.
CELL_TIME_LIMIT = 10.0
# Seconds the watcher waits beyond CELL_TIME_LIMIT before it kills the runner: the runner's own alarm stops a
# plain loop at CELL_TIME_LIMIT, without the cost of a new runner; the watcher stops what the alarm cannot.
WATCH_GRACE = 5.0
WATCH_INTERVAL = 0.1  # seconds between the watcher's looks at which cell the runner is defining


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


def verify_notebook(nb, folder: str | os.PathLike, timeout: float | None = None) -> dict[str, str]:
    """grade cell id -> why its exercise fails, re-checked outside the kernel (see the module docstring);
    a cell whose checks all pass is not in it."""
    checks = checks_of(nb)
    if not checks:
        return {}
    jobs: list[dict[str, Any]] = []
    cases: dict[tuple[str, str], list[Case]] = {}
    expected: dict[tuple[str, str], list] = {}
    for cell_id, calls in checks.items():
        for name, function in calls:
            exercise = every_exercise()[name]
            cases[(cell_id, name)] = build_cases(exercise, extra=True)
            expected[(cell_id, name)] = expected_outputs(exercise, cases[(cell_id, name)])
            jobs.append({"cell": cell_id, "name": name, "function": function})
    limit = timeout or RUNNER_SLACK + sum(every_exercise()[j["name"]].time_limit for j in jobs)
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
            key, result = (cell_id, name), results.get(f"{cell_id}/{name}")
            if isinstance(result, dict) and isinstance(result.get("stopped"), str):
                reasons.append(_stopped_message(name, result["stopped"]))
                continue
            reason = problem or _judge(name, cases[key], expected[key], result)
            if reason:
                reasons.append(f"check_{name}, run again outside your notebook's kernel: {reason}")
        if reasons:
            verdicts[cell_id] = "\n".join(reasons)
    return verdicts


def _run_watched(run_folder: Path, folder: str | os.PathLike, cells: list[tuple[str, str]], jobs: list, limit: float):
    """Run the runner on `cells` (definitions) and `jobs` until it finishes, within `limit` seconds in all
    (else subprocess.TimeoutExpired). The runner stops a cell that runs past CELL_TIME_LIMIT itself; one still
    running WATCH_GRACE later (a loop that catches the runner's exception, one long tensor operation) is
    stopped here: the runner is killed and started again without that cell, which it then names to the
    exercises that need it. Returns why the runner failed (its last words), or None once it has written
    results.pt."""
    deadline = time.monotonic() + limit
    env = {**os.environ, "AUTOGRADING": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    stopped: dict[int, str] = {}  # cell index -> its label
    while True:
        work = {"definitions": cells, "stopped": stopped, "cell_time_limit": CELL_TIME_LIMIT, "jobs": jobs}
        torch.save(work, run_folder / "jobs.pt")
        (run_folder / "defining").unlink(missing_ok=True)
        (run_folder / "stopped").write_text("")
        with open(run_folder / "stderr.txt", "w+") as stderr:
            runner = subprocess.Popen(
                [sys.executable, "-m", "mrcnn_course.teaching.grading.sealed", str(run_folder)],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # a learner's prints; to a file or pipe, an endless print could fill it
                stderr=stderr,
            )
            stuck = _watch(runner, run_folder / "defining", deadline, limit)
            if stuck is None:
                stderr.seek(0)
                return None if runner.returncode == 0 else f"the runner stopped: {stderr.read().strip()[-800:]}"
        # this cell, and those the runner stopped itself before it (no need to wait for them again)
        for index in [stuck, *map(int, (run_folder / "stopped").read_text().split())]:
            stopped[index] = cells[index][0]


def _watch(runner: subprocess.Popen, defining: Path, deadline: float, limit: float) -> int | None:
    """Wait for the runner to end; kill it if the cell it is defining (the number it writes in `defining`)
    takes longer than CELL_TIME_LIMIT + WATCH_GRACE, and return that cell's index, or past `deadline`
    (TimeoutExpired)."""
    cell, since = None, time.monotonic()
    while runner.poll() is None:
        now = time.monotonic()
        try:
            current: int | None = int(defining.read_text())
        except (OSError, ValueError):  # not written yet, or removed once every cell is defined
            current = None
        if current != cell:
            cell, since = current, now
        if now > deadline or (cell is not None and now - since > CELL_TIME_LIMIT + WATCH_GRACE):
            runner.kill()
            runner.wait()
            if now > deadline:
                raise subprocess.TimeoutExpired(runner.args, limit)
            return cell
        time.sleep(WATCH_INTERVAL)
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


def run_learner(run_folder: str) -> None:
    """The runner (a fresh process, in the notebook's folder): define the learner's functions, cell by cell,
    stopping a cell that runs longer than the cell time limit; run them on the jobs' cases (judge.run_cases),
    time the speed cases, save the outcomes to results.pt."""
    work = torch.load(Path(run_folder) / "jobs.pt", weights_only=True)  # verify_notebook wrote plain data
    exercises = {job["name"]: every_exercise()[job["name"]] for job in work["jobs"]}
    # before any learner code runs: the cases, the reference's code objects, the reference itself
    cases = {name: build_cases(e, extra=True) for name, e in exercises.items()}
    forbidden = {
        name: reference_code(e.component, e.torchvision_names, e.reference_function()) for name, e in exercises.items()
    }
    references = {name: e.reference_function() for name, e in exercises.items()}
    namespace: dict[str, Any] = {"__name__": "__main__"}
    stopped: dict[int, str] = dict(work["stopped"])  # cell index -> label: the watcher's, then this runner's
    defining = Path(run_folder) / "defining"  # which cell runs now, for the watcher (_watch)
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
            with open(Path(run_folder) / "stopped", "a") as told:  # for the watcher, if it restarts the runner
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
        exercise, fn = exercises[job["name"]], learner_function(namespace.get(job["function"]))
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
                timing, slow = speed_case(exercise, fn, references[job["name"]])
            except Exception as error:  # noqa: BLE001 (the learner's code raised on the speed case's inputs)
                slow = f"your {exercise.component} raised {type(error).__name__}: {str(error)[:300]}"
        results[key] = {
            "outcomes": [(o.kind, _plain(o.output), o.detail) for o in outcomes],
            "speed": None if timing is None else float(timing.ratio),
            "slow": slow,
        }
    torch.save(results, Path(run_folder) / "results.pt")


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
    run_learner(sys.argv[1])
