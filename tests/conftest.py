"""Fixtures shared by the test modules.

components_reset   (every test) the package's own components before and after: no swap leaks
one_thread         one torch thread for a module of training runs (opt in with usefixtures)
finished_run       (once a session) the output folder of a finished TWO_EPOCHS run
course_home        a fresh MRCNN_COURSE_HOME for a learner's saved components, outside autograding
as_learner         a copy of a function that the checkers take for the learner's own
words(text)        a checker's message with its line wrapping undone, to search in
"""

import contextlib
import os
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mrcnn_course.model import components
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe

# two epochs of two steps: small enough to run a handful of times in the bad-input tests
TWO_EPOCHS = Recipe(epochs=2, images_per_epoch=4, batch_size=2, val_images=2, shown_images=1, image_size=64, seed=2)


@pytest.fixture(autouse=True)
def components_reset() -> Iterator[None]:
    """Every test starts and ends with the package's own components, whatever the one before it swapped."""
    components.reset()
    yield
    components.reset()


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One torch thread: on 2 cores shared with other work, two threads wait on each other (4x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module. Training tests opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with _one_torch_thread():
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a finished TWO_EPOCHS run, trained on one thread (its checkpoint records it)."""
    out = tmp_path_factory.mktemp("finished")
    with _one_torch_thread():
        train(recipe=TWO_EPOCHS, out=out, progress=False)
    return out


@pytest.fixture
def course_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MRCNN_COURSE_HOME in a temporary folder, with AUTOGRADING unset (saving components is on)."""
    monkeypatch.setenv("MRCNN_COURSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUTOGRADING", raising=False)
    return tmp_path / "home"


def _as_learner(fn: Callable) -> Callable:
    """The same code as `fn` in a new function object: the checkers refuse the package's own function
    itself (by identity and module), so a test hands them this copy to play a learner who got it right."""
    code = fn.__code__.replace()  # a code object of its own: the checkers notice the reference's by identity
    clone = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    clone.__module__ = "learner"
    return clone


@pytest.fixture
def as_learner() -> Callable[[Callable], Callable]:
    return _as_learner


def words(text: str) -> str:
    """The text with every run of spaces and line breaks as one space: a message's lines are wrapped."""
    return " ".join(text.split())


os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in test logs, also when run without make
