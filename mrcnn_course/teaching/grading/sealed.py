"""Hidden tests that a learner's cells cannot fool (issue 12): every graded exercise checked again, outside
the learner's kernel, after nbgrader has run the notebook.

In the learner's kernel everything is theirs to change: a cell can rebind grading.check_nms, patch
torch.equal, or capture torchvision's operator (`_OP = torch.ops.torchvision.nms.default`) before a
checker switches it off. So autograding (nbgrader_steps.AutogradingExecute) calls verify_notebook(nb,
folder) once the notebook has run, and it:
  1. finds each graded test cell's checks, `grading.check_<name>(<function>, ...)` (the cells are locked:
     nbgrader restores their source from the gradebook);
  2. builds each exercise's cases, hidden ones included, and their expected outputs with the package's
     reference, here, in the autograder's own process, which never runs a learner's code;
  3. starts a fresh Python (`python -m mrcnn_course.teaching.grading.sealed RUN_FOLDER`, run_learner) that
     executes the notebook's definitions (solution cells whole; of the other code cells only imports,
     defs, classes and assignments without calls: no pictures, no training), then each learner function
     on the cases' inputs with the reference switched off (guard.py), every torchvision operator refused
     at the dispatcher (any route, a captured overload included) and every run of the reference's own
     Python code noticed (guard.reference_noticed); it times the speed case too (speed.py).
     It hands back outputs only, read here with torch.load(weights_only=True): tensors, numbers, text;
  4. compares them here with core.difference (the module as imported here, before any learner code),
     and returns, per grade cell, why it fails; AutogradingExecute adds that as the cell's error output,
     so nbgrader scores the cell 0 whatever the kernel printed.
What it leaves out: a learner who attacks this runner itself (it runs their code, and could be lied to
by code written against it); the checks' other rules (a changed input) stay with the visible check.
"""

import ast
import copy
import functools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECK_CALL = re.compile(r"grading\.check_(\w+)\(\s*(\w+)")
RUNNER_SLACK = 300.0  # seconds for the runner beyond the exercises' own time limits (imports, the speed cases)


def _exercise(name: str):
    from mrcnn_course.teaching.grading import EXERCISES, HELPER_EXERCISES

    return EXERCISES.get(name) or HELPER_EXERCISES.get(name)


def checks_of(nb) -> dict[str, list[tuple[str, str]]]:
    """grade cell id -> [(exercise name, learner function's name), ...] of the checks it calls."""
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            calls = sorted({(n, f) for n, f in CHECK_CALL.findall(cell.source) if _exercise(n) is not None})
            if calls:
                found[meta["grade_id"]] = calls
    return found


def definitions(nb) -> list[str]:
    """The code the runner executes: solution cells whole; of the other code cells (grade cells excepted),
    the imports, function and class definitions and call-free assignments (BLOCK = 128), in order."""
    sources = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or (meta.get("grade") and not meta.get("solution")):
            continue
        if meta.get("solution"):
            sources.append(cell.source)
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
            sources.append(ast.unparse(ast.Module(body=kept, type_ignores=[])))
    return sources


def verify_notebook(nb, folder: str | os.PathLike, timeout: float | None = None) -> dict[str, str]:
    """grade cell id -> why its exercise fails, re-checked outside the kernel (see the module docstring);
    a cell whose checks all pass is not in it."""
    from mrcnn_course.model import components
    from mrcnn_course.teaching.grading.core import build_cases

    checks = checks_of(nb)
    if not checks:
        return {}
    jobs: list[dict[str, Any]] = []
    expected: dict[tuple[str, str], list] = {}
    for cell_id, calls in checks.items():
        for name, function in calls:
            exercise = _exercise(name)
            cases = build_cases(exercise, extra=True)
            with components.using(**{n: components.OWN for n in components.NAMES}):
                reference = exercise.reference_function()
                expected[(cell_id, name)] = [(c, exercise.result(reference, copy.deepcopy(c.args))) for c in cases]
            jobs.append({"cell": cell_id, "name": name, "function": function, "cases": [c.args for c in cases]})
    limit = timeout or RUNNER_SLACK + sum(_exercise(j["name"]).time_limit for j in jobs)
    with tempfile.TemporaryDirectory(prefix="sealed-") as run_folder:
        torch.save({"definitions": definitions(nb), "jobs": jobs}, Path(run_folder) / "jobs.pt")
        env = {**os.environ, "AUTOGRADING": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
        try:
            ran = subprocess.run(
                [sys.executable, "-m", "mrcnn_course.teaching.grading.sealed", run_folder],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=limit,
            )
            problem = None if ran.returncode == 0 else f"the runner stopped: {ran.stderr.strip()[-800:]}"
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
            reason = problem or _judge(name, expected[(cell_id, name)], results.get(f"{cell_id}/{name}"))
            if reason:
                reasons.append(f"check_{name}, run again outside your notebook's kernel: {reason}")
        if reasons:
            verdicts[cell_id] = "\n".join(reasons)
    return verdicts


def _judge(name: str, expected: list, result: dict | None) -> str | None:
    from mrcnn_course.teaching.grading.core import difference
    from mrcnn_course.teaching.grading.speed import MAX_RATIO

    if not isinstance(result, dict):
        return "no result came back"
    if result.get("missing"):
        return result["missing"]
    exercise = _exercise(name)
    outputs = result.get("outputs", [])
    if len(outputs) != len(expected):
        return "not every case ran"
    for (case, want), output in zip(expected, outputs):
        kind, value = output
        if kind != "ok":
            return f"case '{case.name}': {value}"
        try:
            found = (case.compare or (lambda e, g, c: difference(e, g, exercise.atol, exercise.rtol)))(
                want, value, case
            )
        except Exception as error:  # noqa: BLE001 (an output of an unexpected kind)
            return f"case '{case.name}': the output could not be compared ({type(error).__name__}: {error})"
        if found:
            return f"case '{case.name}' differs in {found.where}: {found.detail}"
    ratio = result.get("speed")
    if isinstance(ratio, float) and ratio > MAX_RATIO:
        return f"the speed case: {ratio:.1f}x slower than the package's (the limit is {MAX_RATIO:g}x)"
    return None


def _forbidden_code(exercise) -> set:
    """The code objects of the reference's own Python functions: running one means the learner called it."""
    from mrcnn_course.teaching.grading.guard import reference_code

    return reference_code(exercise.component, exercise.torchvision_names, exercise.reference_function())


def _run_case(exercise, fn: Callable, args: tuple, forbidden: set) -> tuple[str, Any]:
    from mrcnn_course.teaching.grading.guard import reference_noticed, reference_switched_off, time_limit

    stop = f"stopped after {exercise.time_limit:g} s"
    try:
        with (
            reference_switched_off(exercise.component, exercise.torchvision_names, fn),
            time_limit(exercise.time_limit, stop),
            reference_noticed(forbidden) as reached,
        ):
            value = exercise.result(fn, copy.deepcopy(args))
    except Exception as error:  # noqa: BLE001 (the learner's code raised: that case fails)
        return "raised", f"your {exercise.component} raised {type(error).__name__}: {str(error)[:300]}"
    if reached:
        return "reference", f"your {exercise.component} ran the reference ({reached[0]}): write your own"
    return "ok", value


def switched_off(exercise, fn: Callable):
    """The guard of fn's check: the reference out of reach, the other components the package's own."""
    from mrcnn_course.teaching.grading.guard import reference_switched_off

    return reference_switched_off(exercise.component, exercise.torchvision_names, fn)


def run_learner(run_folder: str) -> None:
    """The runner (a fresh process, in the notebook's folder): define the learner's functions, run them on the
    jobs' cases, time the speed cases, save the outputs to results.pt."""
    from mrcnn_course.teaching.grading.speed import check_speed

    work = torch.load(Path(run_folder) / "jobs.pt", weights_only=False)  # written by verify_notebook
    exercises = {job["name"]: _exercise(job["name"]) for job in work["jobs"]}
    forbidden = {name: _forbidden_code(e) for name, e in exercises.items()}  # before any learner code runs
    references = {name: e.reference_function() for name, e in exercises.items()}
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for source in work["definitions"]:
        try:
            exec(compile(source, "<notebook>", "exec"), namespace)  # noqa: S102 (the learner's own notebook)
        except BaseException:  # noqa: BLE001, S110 (a cell that fails defines what it defined before failing)
            pass
    results: dict[str, dict[str, Any]] = {}
    for job in work["jobs"]:
        exercise, fn = exercises[job["name"]], namespace.get(job["function"])
        key = f"{job['cell']}/{job['name']}"
        if not callable(fn):
            results[key] = {"missing": f"no function named {job['function']} was defined"}
            continue
        outputs = [_run_case(exercise, fn, args, forbidden[job["name"]]) for args in job["cases"]]
        ratio = None
        if all(kind == "ok" for kind, _ in outputs) and exercise.reference is None:
            timing, _ = check_speed(
                exercise.component, references[job["name"]], fn, functools.partial(switched_off, exercise, fn)
            )
            ratio = None if timing is None else float(timing.ratio)
        results[key] = {"outputs": [(kind, _plain(value)) for kind, value in outputs], "speed": ratio}
    torch.save(results, Path(run_folder) / "results.pt")


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
