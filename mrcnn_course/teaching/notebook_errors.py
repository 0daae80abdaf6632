"""What a learner sees when a cell runs before the cells it needs, in a notebook.

A check cell run before the setup cell, the exercise's function or a quiz answer would show a raw
NameError, and a quiz's format check would print the cell around it, with its ~600-character sealed
key. `install()` gives IPython a handler (InteractiveShell.set_custom_exc) for two errors:

    NameError raised by a cell's own top-level code   "name 'q1' is not defined" and which cell to
                                                       run first, in lines short enough for
                                                       `nbgrader validate`
    quiz.AnswerMissing (q1 still None, "E", ...)       its message alone, without the cell's source
    CheckFailed, NotWrittenYet (a check's verdict)     the learner's own lines (the cell that called the
                                                       check) and the message, once: never the frames
                                                       of the grader that raised it

The cell still fails (nbgrader grades it as failed); only what it prints changes. A NameError from
inside a function (the learner's typo in `nms`) keeps IPython's own traceback, at the learner's line.
Every check cell imports what it needs itself (`from mrcnn_course.teaching import grading` / `quiz`), which
installs the handler, so it is there even when the setup cell never ran. Outside IPython, install()
does nothing. IPython has one slot for such a handler: installing replaces any other.
"""

import re
import textwrap
from pathlib import Path
from types import TracebackType

WIDTH = 80  # `nbgrader validate` cuts traceback lines at 87 characters, 4 of them its indent
PACKAGE = str(Path(__file__).resolve().parents[1])  # the course's package: a traceback's frames in it are the grader's
ANSWER = re.compile(r"q\d+")  # a quiz's answer variables: q1, q2, ...


class AnswerMissing(AssertionError):
    """A quiz answer that is not a letter yet: shown as its message alone (the cell holds the sealed key)."""


class CheckFailed(AssertionError):
    """A check's verdict (grading/core.py): shown at the learner's line, without the grader's frames, whose
    source would only repeat what the message says."""


class NotWrittenYet(NotImplementedError):
    """A check run on a function still raising its stub: shown like CheckFailed."""


def _lines(first: str, advice: str) -> list[str]:
    return [first, *textwrap.wrap(advice, WIDTH, initial_indent="  ", subsequent_indent="  ")]


def name_error_advice(name: str) -> str:
    """Which cell to run first, for a name that a cell's top-level code did not find."""
    if ANSWER.fullmatch(name):
        return (
            f'Run the answer cell of {name} ({name} = "A", "B", "C" or "D", just above this one) first, then this cell.'
        )
    return (
        f"If a cell above defines it (the setup cell at the top, `def {name}` or `{name} = ...`), run it "
        f"first, then this cell: Run > Run All Above Selected Cell runs them all. If none does, check "
        f"the spelling."
    )


def _raised_at_top_level(tb: TracebackType | None) -> bool:
    """Whether the error came from a cell's own code, not from inside a function it called."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "<module>"


def _learner_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback cut after its last frame outside the course's package: the learner's cell and
    their own functions, not the checker below them."""
    last, entry = tb, tb
    while entry is not None and not entry.tb_frame.f_code.co_filename.startswith(PACKAGE):
        last, entry = entry, entry.tb_next
    if last is not None:
        last.tb_next = None
    return tb


def _handler(shell, etype, value, tb, tb_offset=None):
    if isinstance(value, (CheckFailed, NotWrittenYet)):
        # under its own name: nbgrader adds a second copy of an error whose name differs from the kernel's reply
        shell.showtraceback((etype, value, _learner_frames(tb)), tb_offset=tb_offset, running_compiled_code=True)
        return None
    if isinstance(value, AnswerMissing):
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])  # the kernel's reply names etype too
        return None
    name = getattr(value, "name", None)
    if isinstance(value, NameError) and name and _raised_at_top_level(tb):
        lines = _lines(f"NameError: name '{name}' is not defined.", name_error_advice(name))
        shell._showtraceback(NameError, NameError("\n".join(lines)[len("NameError: ") :]), lines)
        return None
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)  # IPython's own
    return None


def install() -> None:
    """Give the running IPython (a notebook's kernel) the handler; nothing outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "CustomTB", None) is not getattr(shell, "_mrcnn_course_handler", 0):
        shell.set_custom_exc((NameError, AnswerMissing, CheckFailed, NotWrittenYet), _handler)
        shell._mrcnn_course_handler = shell.CustomTB
