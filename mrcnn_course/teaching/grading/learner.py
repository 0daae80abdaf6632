"""The learner's components beyond one lesson: plug them into the model, save them, load them back.

    grading.plug_into_model(model, [image], nms=nms)   # run with yours and with the reference: same output?
    grading.plug_into_model(model, [image], targets=[target], fastrcnn_loss=fastrcnn_loss)  # training: same losses?
    grading.save_component("nms", nms)                 # ~/.mrcnn_course/components/nms.py (MRCNN_COURSE_HOME)
    grading.save_component("nms_fast", nms_fast)       # the same component, fast: .../components/nms_fast.py
    mine = grading.load_components()                   # {component name: function} of the saved ones
    print(mine.report())                               # which are yours (which version), which are the reference
    with components.using(**mine): model([image])      # the capstone runs on your components

A component written twice (nms, the greedy loop; nms_fast, checked for speed too) is one component with two
exercises (exercise.versions): each version is saved under its exercise's name, and the model runs the fast
one when it passed its check (and loads), else the first one; the report says which, and what it costs.

Only functions that passed their checker in this session are plugged in or saved: a stub or a broken
function would make the model crash far from its cause. For the same reason a saved function is checked
again when it is loaded (its visible cases, quietly; not the speed case it passed in its lesson): a file
edited by hand since then, and now wrong, is not loaded as yours. Under AUTOGRADING=1 nothing is saved:
the instructor's machine runs every learner's notebook and must not collect their functions.
"""

import builtins
import copy
import importlib
import importlib.util
import inspect
import os
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch

from mrcnn_course.model import components
from mrcnn_course.teaching.autograding import autograding
from mrcnn_course.teaching.grading.core import passed, visible_check_failure
from mrcnn_course.teaching.grading.exercise import EXERCISES, versions
from mrcnn_course.teaching.grading.judge import difference, learner_function


def course_home() -> Path:
    """The per-user course folder: $MRCNN_COURSE_HOME, or ~/.mrcnn_course (never the lesson's folder:
    autograding runs each notebook inside the grading folder)."""
    return Path(os.environ.get("MRCNN_COURSE_HOME") or Path.home() / ".mrcnn_course").expanduser()


def _unknown(name: str) -> ValueError:
    return ValueError(f"no component named {name!r}; the components are: {', '.join(components.NAMES)}")


def _component_of(name: str) -> str:
    """The component that `name` writes: a component's own name, or its fast version's (nms_fast -> nms)."""
    if name in EXERCISES:
        return EXERCISES[name].writes
    if name in components.COMPONENTS:
        return name
    fast = ", ".join(n for n in EXERCISES if n not in components.COMPONENTS)
    raise ValueError(
        f"no component named {name!r}; the components are: {', '.join(components.NAMES)}; their fast versions: {fast}"
    )


def _names_used(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):  # comprehensions, lambdas and nested functions
            names |= _names_used(const)
    return names


def _import_line(name: str, value: Any) -> str | None:
    """How to bring `value` back under `name` in a fresh module, or None if it cannot be imported."""
    if isinstance(value, ModuleType):
        module_name = value.__name__
        if module_name == name:
            return f"import {module_name}"
        parent, _, last = module_name.rpartition(".")
        return f"from {parent} import {last}" if parent and last == name else f"import {module_name} as {name}"
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "." in qualname:
        return None
    try:
        if getattr(importlib.import_module(module), qualname) is not value:
            return None
    except (ImportError, AttributeError):
        return None
    return f"from {module} import {qualname}" + (f" as {name}" if name != qualname else "")


def source_with_imports(fn: Callable) -> str:
    """The source of `fn`, after the imports, notebook helper functions and constants it refers to.

    Raises ValueError naming a global that cannot be written down (e.g. a tensor or a model)."""
    imports, helpers, constants, done = [], [], [], set()

    def collect(function: Callable) -> None:
        for name in sorted(_names_used(function.__code__)):
            if name in done or name not in function.__globals__:
                continue
            done.add(name)
            value = function.__globals__[name]
            line = _import_line(name, value)
            if inspect.isfunction(value) and value.__module__ == function.__module__:
                collect(value)  # a helper written beside it (in the notebook): its own needs first
                helpers.append(inspect.getsource(value))
            elif line:
                imports.append(line)
            elif isinstance(value, (bool, int, float, str, tuple)) and eval(repr(value), {}) == value:
                constants.append(f"{name} = {value!r}")
            elif not hasattr(builtins, name):
                raise ValueError(
                    f"{fn.__name__} uses the global {name!r} ({type(value).__name__}), which cannot be "
                    f"saved: pass it as an argument or create it inside the function"
                )

    collect(fn)
    # dedented: a module exercise's forward is written inside its class, and is saved as a function
    parts = ["\n".join(sorted(set(imports))), "\n".join(constants)] + helpers + [textwrap.dedent(inspect.getsource(fn))]
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"


def save_component(name: str, fn: Callable) -> None:
    """Save your `fn` for component `name` (its source and imports) so that later lessons can load it; for a
    module exercise, `fn` is your class (its forward is saved as the function).

    `name` is a component's, or its fast version's (nms_fast): each version has a file of its own,
    course_home()/components/<name>.py. Only a function that passed check_<name> in this session is saved.
    It says what it did in one line (saved to which file, or why not: not passed yet, autograding, or the
    folder is not writable, with a warning) and returns nothing, so that a lesson cell ending with it
    shows that line alone.
    """
    _component_of(name)
    fn = learner_function(fn)  # a module exercise's class: its forward, saved as the function
    if autograding():
        print(f"{name}: not saved (autograding)")
        return
    if passed(name) is not fn:
        print(f"{name}: not saved yet: it has to pass check_{name} first")
        return
    path = course_home() / "components" / f"{name}.py"
    header = (
        f'"""Your {name}, saved by mrcnn_course.teaching.grading.save_component after it passed check_{name}."""\n\n'
    )
    alias = f"\n\n{name} = {fn.__name__}\n" if fn.__name__ != name else ""
    try:
        text = header + source_with_imports(fn) + alias
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".py.tmp")
        temporary.write_text(text)
        temporary.replace(path)  # atomic: a reader never sees half a file
    except (OSError, TypeError, ValueError) as error:  # TypeError: no source (a builtin)
        warnings.warn(
            f"{name} was not saved to {path}: {error}. Set MRCNN_COURSE_HOME to a writable folder "
            f"to save your components.",
            stacklevel=2,
        )
        return
    print(f"{name}: saved to {path}")


class SavedComponents(dict):
    """{component name: your function} for each component saved and loaded; report() tells the rest."""

    def __init__(self, functions: dict[str, Callable], problems: dict[str, str], folder: Path, notes: dict[str, str]):
        super().__init__(functions)
        self.problems = problems  # name -> why a saved file is not used: it did not load, or fails its check
        self.folder = folder
        self.notes = notes  # component -> which of your versions runs, and what a missing fast one costs

    def report(self) -> str:
        """One line per component: yours (which version, and from where) or the reference (and why)."""
        lines = [f"components in {self.folder}:"]
        for name in components.NAMES:
            if name in self:
                lines.append(f"  yours      {name}" + (f"  ({self.notes[name]})" if name in self.notes else ""))
            elif name in self.problems:
                lines.append(f"  reference  {name}  ({self.problems[name]})")
            else:
                lines.append(f"  reference  {name}")
        return "\n".join(lines)


def _load_saved(name: str, path: Path) -> tuple[Callable | None, str | None]:
    """(your function saved for exercise `name`, None), or (None, why it is not used): it did not load, or it
    fails its visible check again (edited by hand since it was saved: it would break the model far from its cause)."""
    try:
        spec = importlib.util.spec_from_file_location(f"mrcnn_course_saved_{name}", path)
        assert spec is not None and spec.loader is not None  # a .py file always has both
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, name)
    except Exception as error:  # a file edited by hand, or a package since uninstalled
        return None, f"your saved file did not load: {type(error).__name__}: {error}"
    why = visible_check_failure(EXERCISES[name], function) if name in EXERCISES else "no check exists for it"
    if why is not None:
        return None, f"your saved {name} was not loaded: {why}; fix it in its lesson, pass check_{name}, save it again"
    return function, None


def load_components(names: tuple[str, ...] | None = None) -> SavedComponents:
    """Load your saved components (all, or the named ones) from course_home()/components, each after it
    passes its visible check again; one that does not load or fails is left to the reference (see report).
    Of a component written twice (nms, nms_fast), the fast version runs when it loads and passes, else the
    first one. Under autograding nothing loads: the grading machine's course folder holds its owner's
    components, not the learner's (autograding saves none), so the reference runs."""
    folder = course_home() / "components"
    functions, problems, notes = {}, {}, {}
    if autograding():
        return SavedComponents({}, {name: "autograding: the reference runs" for name in components.NAMES}, folder, {})
    for component in names or components.NAMES:
        if component not in components.COMPONENTS:
            raise _unknown(component)
        written = [e.component for e in versions(component)] or [component]  # no exercise: a file saved by hand
        why_not = {}  # version -> why it is not used
        for name in reversed(written):  # the fast version first
            path = folder / f"{name}.py"
            if not path.exists():
                why_not[name] = "not saved"
                continue
            function, why = _load_saved(name, path)
            if function is None:
                why_not[name] = why or ""
                continue
            functions[component] = function
            if len(written) > 1:
                notes[component] = _version_note(name, why_not)
            break
        reasons = [why for why in why_not.values() if why != "not saved"]
        if component not in functions and reasons:
            problems[component] = "; ".join(reasons)
    return SavedComponents(functions, problems, folder, notes)


def _version_note(name: str, fast_not_used: dict[str, str]) -> str:
    """The report's note on the version that runs: 'your nms_fast (the matrix form)', or, when it is the first
    version, why the fast one is not used and what that costs."""
    form = EXERCISES[name].form
    note = f"your {name}" + (f": {form}" if form else "")
    for fast, why in fast_not_used.items():
        reason = "not passed or not saved" if why == "not saved" else f"not used: {why}"
        note += f"; {fast} {reason}: slower training steps, which fit_to_budget times and pays for in scenes"
    return note


def plug_into_model(
    model: torch.nn.Module, inputs: Any, atol: float = 1e-4, targets: list[dict] | None = None, **functions: Callable
) -> Any:
    """Run model(inputs) with the reference, then with your functions (name=function, or name=YourClass for
    a module exercise); print whether the outputs are the same (floats within atol, relative 1e-4) and return yours.

    With `targets`, a copy of the model runs in training mode, model(inputs, targets), and its five
    losses are compared: only training calls the losses and the mask targets. Both runs draw the same
    random anchors and RoIs (the same seed), and the model itself, batch norm included, is untouched.

    A function that has not passed its checker yet is left out (the note says so): the model runs
    with the reference in its place. A component's fast version is named as its exercise (nms_fast=nms_fast).
    """
    written = {name: _component_of(name) for name in functions}  # nms_fast -> nms
    for component in set(written.values()):
        both = [name for name, writes in written.items() if writes == component]
        if len(both) > 1:
            raise ValueError(f"{' and '.join(both)} are two versions of the component {component}: plug in one")
    functions = {name: learner_function(fn) for name, fn in functions.items()}  # a class: its forward
    ready = {written[name]: fn for name, fn in functions.items() if passed(name) is fn}
    for name in (n for n in functions if written[n] not in ready):
        print(
            f"{name}: not plugged in: it has to pass check_{name} first (the model uses the reference {written[name]})"
        )
    was_training = model.training
    model.eval()

    def outputs() -> Any:
        if targets is None:
            return model(inputs)
        with torch.random.fork_rng(devices=[]):  # training samples anchors and RoIs: the same draws each run
            torch.manual_seed(0)
            return copy.deepcopy(model).train()(inputs, targets)

    try:
        with torch.no_grad():
            with components.using(**{name: components.OWN for name in ready}):
                reference = outputs()
            if not ready:
                return reference
            with components.using(**ready):
                yours = outputs()
    finally:
        model.train(was_training)
    found = difference(reference, yours, atol, 1e-4)
    verdict = "yes" if found is None else f"no: in {found.where}, {found.detail}"
    detections = isinstance(reference, list) and all(isinstance(r, dict) and "boxes" in r for r in reference)
    run = "training (losses)" if targets is not None else "inference (detections)" if detections else "inference"
    # a cell often runs both; a model that is not a detector (a ResNet body) gives no detections to name
    plugged = [name for name in functions if written[name] in ready]
    print(f"{run}, with your {', '.join(plugged)}: same output as the reference: {verdict}")
    return yours
