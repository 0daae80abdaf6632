"""What a checker does around the learner's code: keep the reference out of reach, stop runaway
loops, and point at the learner's own line when their code raises.

Out of reach: while a checker runs the learner's `name`, these raise ReferenceSwitchedOff:
    mrcnn_course's own function (e.g. mrcnn_course.model.box_ops.nms) and its Component entry,
    components.<name> (the forwarder the model calls), mrcnn_course.model.torchvision_ops.<name>,
    torchvision's versions listed by the exercise (e.g. torchvision.ops.nms, torch.ops.torchvision.nms),
    and any name in the learner's notebook globals bound to one of those objects.
Every other component runs the package's own implementation ("own") during the check, so a check
tests one function at a time. Everything is put back afterwards, also after an error.

Time limit: SIGALRM (signal.setitimer) raises TimeLimitExceeded in the main thread, where notebook
code runs. Limits: POSIX only (on Windows there is no SIGALRM and checks run without a limit; the
kernel's Interrupt button and nbgrader's Execute.timeout still work); a single long C/torch call is
interrupted only when it returns to Python; an alarm already pending (e.g. pytest-timeout's) is
re-armed afterwards with the time it had left.
"""

import importlib
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

from mrcnn_course.model import components


class ReferenceSwitchedOff(RuntimeError):
    """Raised by a reference implementation that a checker has switched off."""


class TimeLimitExceeded(AssertionError):
    """Raised in the learner's code when a check runs past its time limit."""


def _blocker(name: str, what: str) -> Callable:
    def switched_off(*args, **kwargs):
        raise ReferenceSwitchedOff(
            f"{what} is switched off while check_{name} runs: the checker compares YOUR {name} with it. "
            f"Write the computation with torch operations (the other components are allowed)."
        )

    return switched_off


def _owner_and_attribute(dotted: str) -> tuple[object, str]:
    """ "torchvision.ops.nms" -> (the module torchvision.ops, "nms"); works for class attributes too."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:-1]:
            owner = getattr(owner, part)
        return owner, parts[-1]
    raise ImportError(f"cannot resolve {dotted!r}")


def reference_targets(name: str, torchvision_names: tuple[str, ...]) -> list[tuple[object, str, str]]:
    """(owner, attribute, dotted name) of every implementation of `name` a learner could call (for an
    exercise that is not a component, only those in `torchvision_names`)."""
    targets: list[tuple[object, str, str]] = []
    dotted_names = tuple(torchvision_names)
    if name in components.COMPONENTS:
        own = components.COMPONENTS[name].own
        # COMPONENTS[name].own reads the module attribute, so switching that off covers it too
        targets = [
            (sys.modules[own.__module__], own.__name__, f"{own.__module__}.{own.__name__}"),
            (components, name, f"mrcnn_course.model.components.{name}"),
        ]
        dotted_names = (f"mrcnn_course.model.torchvision_ops.{name}",) + dotted_names
    for dotted in dotted_names:
        try:
            owner, attribute = _owner_and_attribute(dotted)
        except ImportError:  # torchvision is optional: nothing to switch off without it
            continue
        targets.append((owner, attribute, dotted))
    return targets


@contextmanager
def reference_switched_off(name: str, torchvision_names: tuple[str, ...], learner_fn: Callable) -> Iterator[None]:
    """Within the block: `name`'s implementations raise ReferenceSwitchedOff; the others are "own"."""
    saved: list[tuple[object, str, object]] = []
    learner_globals: dict[str, Any] = getattr(learner_fn, "__globals__", {})
    try:
        switched = set()
        for owner, attribute, dotted in reference_targets(name, torchvision_names):
            original = getattr(owner, attribute)
            saved.append((owner, attribute, original))
            switched.add(id(original))
            setattr(owner, attribute, _blocker(name, dotted))
        for key, value in list(learner_globals.items()):  # e.g. `from torchvision.ops import nms`
            if id(value) in switched:
                saved.append((learner_globals, key, value))
                learner_globals[key] = _blocker(name, f"{key} (imported into your notebook)")
        others: dict[str, str | Callable] = {other: components.OWN for other in components.NAMES if other != name}
        if name in components.COMPONENTS:
            others[name] = _blocker(name, f"components.{name}")
        with components.using(**others):
            yield
    finally:
        for owner, attribute, original in reversed(saved):
            if isinstance(owner, dict):  # the learner's notebook globals
                owner[attribute] = original
            else:
                setattr(owner, attribute, original)


class RefuseTorchvisionOps(TorchDispatchMode):
    """Within the block every operator of torchvision's C++ library raises ReferenceSwitchedOff, however the
    code reached it: torchvision.ops.nms, torch.ops.torchvision.nms, or an overload captured before the check
    (`_OP = torch.ops.torchvision.nms.default`). The package's own components use none of them."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "torchvision":
            raise ReferenceSwitchedOff(f"torchvision's operator {func} is switched off while your code is checked")
        return func(*args, **(kwargs or {}))


@contextmanager
def reference_noticed(code_objects: set) -> Iterator[list[str]]:
    """Yields a list that, after the block, names every function among `code_objects` (the reference's own
    Python code) that ran inside it, however it was reached (a name bound before the check, a default
    argument, a closure): sys.setprofile sees every Python call. Torchvision's operators raise meanwhile."""
    reached: list[str] = []
    ids = {id(code) for code in code_objects}  # by identity: equal code written by a learner is theirs
    grading_folder = str(Path(__file__).parent)  # a catalogue's Mistake computes its answer with the reference

    def notice(frame, event, arg):
        if event == "call" and id(frame.f_code) in ids:
            caller = frame.f_back
            if caller is None or not caller.f_code.co_filename.startswith(grading_folder):
                reached.append(getattr(frame.f_code, "co_qualname", frame.f_code.co_name))  # co_qualname: 3.11+

    previous = sys.getprofile()
    sys.setprofile(notice)
    try:
        with RefuseTorchvisionOps():
            yield reached
    finally:
        sys.setprofile(previous)


def reference_code(name: str, torchvision_names: tuple[str, ...], reference: Callable) -> set:
    """The code objects of every Python implementation of `name` (see reference_targets) and of `reference`."""
    targets = reference_targets(name, torchvision_names)
    functions = [reference] + [getattr(owner, attribute) for owner, attribute, _ in targets if owner is not components]
    return {f.__code__ for f in functions if hasattr(f, "__code__")}  # (components.<name> is switched off instead:
    # every forwarder shares one code object, and a learner's function may call the other components)


@contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise TimeLimitExceeded(message) in the main thread if the block runs longer than `seconds`."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield  # no SIGALRM here: run without a limit (see the module docstring)
        return

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(message)

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # someone else's alarm was pending: give it back what it had left
            left = max(previous_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def _library_folders() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    folders = {
        paths["stdlib"],
        paths["platstdlib"],
        paths["purelib"],
        paths["platlib"],
        str(Path(components.__file__).parents[1]),
    }  # mrcnn_course itself, also when installed editable
    return tuple(str(Path(f).resolve()) for f in folders)


def _cell_name(filename: str) -> str:
    """ "Cell In[7]" for code typed in a notebook cell (as IPython names it), else the file name."""
    try:
        from IPython import get_ipython

        number = get_ipython().compile._filename_map.get(filename)  # filled by IPython per cell
        if number is not None:
            return f"Cell In[{number}]"
    except (ImportError, AttributeError):
        pass
    return filename


def _learner_frames(error: BaseException) -> list[traceback.FrameSummary]:
    libraries = _library_folders()
    return [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith("<frozen") and not str(Path(f.filename).resolve()).startswith(libraries)
    ]


def raised_in_learner_code(error: BaseException) -> bool:
    """Whether the learner's own line raised `error` (a stub's NotImplementedError), not a library
    they called (torch raises NotImplementedError for e.g. bilinear resizing of a 3-D tensor)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1] in _learner_frames(error)


def learner_traceback(error: BaseException) -> str:
    """The frames of `error`'s traceback in the learner's own code (not torch, not this package),
    and the error line: what a learner needs to find their mistake."""
    frames = _learner_frames(error)
    lines = []
    for frame in frames:
        lines.append(f"{_cell_name(frame.filename)}, line {frame.lineno}, in {frame.name}")
        if frame.line:
            lines.append(f"    {frame.line}")
    if not frames:
        lines.append("(raised before any line of your function ran: check the arguments it takes)")
    lines.append(f"{type(error).__name__}: {error}")
    return "\n".join(lines)
