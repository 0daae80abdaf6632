"""The learner's components beyond one lesson: plug them into the model, save them, load them back.

    grading.plug_into_model(model, [image], nms=nms)   # run with yours and with the reference: same output?
    grading.plug_into_model(model, [image], targets=[target], fastrcnn_loss=fastrcnn_loss)  # training: same losses?
    grading.save_component("nms", nms)                 # ~/.mrcnn_course/components/nms.py (MRCNN_COURSE_HOME)
    mine = grading.load_components()                   # {name: function} of the saved ones
    print(mine.report())                               # which are yours, which fall back to the reference
    with components.using(**mine): model([image])      # the capstone runs on your components

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
from mrcnn_course.teaching.grading.exercise import EXERCISES
from mrcnn_course.teaching.grading.judge import difference, learner_function


def course_home() -> Path:
    """The per-user course folder: $MRCNN_COURSE_HOME, or ~/.mrcnn_course (never the lesson's folder:
    autograding runs each notebook inside the grading folder)."""
    return Path(os.environ.get("MRCNN_COURSE_HOME") or Path.home() / ".mrcnn_course").expanduser()


def _unknown(name: str) -> ValueError:
    return ValueError(f"no component named {name!r}; the components are: {', '.join(components.NAMES)}")


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


def save_component(name: str, fn: Callable) -> Path | None:
    """Save your `fn` for component `name` (its source and imports) so that later lessons can load it; for a
    module exercise, `fn` is your class (its forward is saved as the function).

    Only a function that passed check_<name> in this session is saved. Returns the file, or None when
    nothing was saved (not passed yet, autograding, or the folder is not writable: a warning says why).
    """
    if name not in components.COMPONENTS:
        raise _unknown(name)
    fn = learner_function(fn)  # a module exercise's class: its forward, saved as the function
    if autograding():
        print(f"{name}: not saved (autograding)")
        return None
    if passed(name) is not fn:
        print(f"{name}: not saved yet: it has to pass check_{name} first")
        return None
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
        return None
    print(f"{name}: saved to {path}")
    return path


class SavedComponents(dict):
    """{component name: your function} for each component saved and loaded; report() tells the rest."""

    def __init__(self, functions: dict[str, Callable], problems: dict[str, str], folder: Path):
        super().__init__(functions)
        self.problems = problems  # name -> why a saved file is not used: it did not load, or fails its check
        self.folder = folder

    def report(self) -> str:
        """One line per component: yours (and from where) or the reference (and why)."""
        lines = [f"components in {self.folder}:"]
        for name in components.NAMES:
            if name in self:
                lines.append(f"  yours      {name}")
            elif name in self.problems:
                lines.append(f"  reference  {name}  ({self.problems[name]})")
            else:
                lines.append(f"  reference  {name}")
        return "\n".join(lines)


def load_components(names: tuple[str, ...] | None = None) -> SavedComponents:
    """Load your saved components (all, or the named ones) from course_home()/components, each after it
    passes its visible check again; one that does not load or fails is left to the reference (see report)."""
    folder = course_home() / "components"
    functions, problems = {}, {}
    for name in names or components.NAMES:
        if name not in components.COMPONENTS:
            raise _unknown(name)
        path = folder / f"{name}.py"
        if not path.exists():
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"mrcnn_course_saved_{name}", path)
            assert spec is not None and spec.loader is not None  # a .py file always has both
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            function = getattr(module, name)
        except Exception as error:  # a file edited by hand, or a package since uninstalled
            problems[name] = f"your saved file did not load: {type(error).__name__}: {error}"
            continue
        why = visible_check_failure(EXERCISES[name], function) if name in EXERCISES else "no check exists for it"
        if why is None:
            functions[name] = function
        else:  # edited by hand since it was saved, or saved by hand: it would break the model far from its cause
            problems[name] = (
                f"your saved {name} was not loaded: {why}; fix it in its lesson, pass check_{name}, save it again"
            )
    return SavedComponents(functions, problems, folder)


def plug_into_model(
    model: torch.nn.Module, inputs: Any, atol: float = 1e-4, targets: list[dict] | None = None, **functions: Callable
) -> Any:
    """Run model(inputs) with the reference, then with your functions (name=function, or name=YourClass for
    a module exercise); print whether the outputs are the same (floats within atol, relative 1e-4) and return yours.

    With `targets`, a copy of the model runs in training mode, model(inputs, targets), and its five
    losses are compared: only training calls the losses and the mask targets. Both runs draw the same
    random anchors and RoIs (the same seed), and the model itself, batch norm included, is untouched.

    A function that has not passed its checker yet is left out (the note says so): the model runs
    with the reference in its place.
    """
    for name in functions:
        if name not in components.COMPONENTS:
            raise _unknown(name)
    functions = {name: learner_function(fn) for name, fn in functions.items()}  # a class: its forward
    ready = {name: fn for name, fn in functions.items() if passed(name) is fn}
    for name in (n for n in functions if n not in ready):
        print(f"{name}: not plugged in: it has to pass check_{name} first (the model uses the reference {name})")
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
    run = "inference (detections)" if targets is None else "training (losses)"  # a cell often runs both
    print(f"{run}, with your {', '.join(ready)}: same output as the reference: {verdict}")
    return yours
