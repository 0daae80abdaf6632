"""Kernels forked from the grading process's zygote behave as kernels started afresh, under nbclient as nbgrader
runs it (nbgrader_steps.WarmKernelManager): each a process of its own, with the launch's folder and environment,
outputs and figures as usual, an endless cell interrupted at the timeout and the next cell run, a kernel that dies
reported as dead; without a zygote the launcher is ipykernel's own. One zygote for the module (its imports take
a few seconds), a few kernels."""

import os
from unittest import mock

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from mrcnn_course.teaching import nbgrader_steps, warm_kernels

KERNEL_SPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELLS = [
    "import os, torch\nprint(os.getpid(), os.getppid(), os.getcwd(), os.environ['AUTOGRADING'])",
    "import mrcnn_course.teaching.autograding as autograding\nprint(getattr(autograding, 'LEFT_BY_A_KERNEL', None))\n"
    "autograding.LEFT_BY_A_KERNEL = 'yes'",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
    "while True:\n    pass",
    "print('after the interrupted cell')",
]


def run(cells: list[str], folder, timeout: int = 60) -> nbformat.NotebookNode:
    """The notebook of `cells` as nbgrader's Execute runs it (AUTOGRADING=1), in `folder`."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata={"kernelspec": KERNEL_SPEC}
    )
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        interrupt_on_timeout=True,  # as nbgrader's Execute
        kernel_manager_class=nbgrader_steps.WarmKernelManager,
        resources={"metadata": {"path": str(folder)}},
    )
    with mock.patch.dict(os.environ, nbgrader_steps.AUTOGRADING_ENV):
        return client.execute()


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def zygote():
    warm_kernels.start_zygote(nbgrader_steps.AUTOGRADING_ENV)
    assert warm_kernels.ZYGOTE in os.environ, "the zygote did not start"
    yield
    warm_kernels.stop_zygote()


def test_a_forked_kernel_runs_a_notebook_as_a_fresh_one(zygote, tmp_path):
    first, second = (run(CELLS, tmp_path, timeout=10) for _ in range(2))
    for nb in (first, second):
        pid, parent, folder, autograding = text(nb.cells[0]).split()
        assert folder == str(tmp_path) and autograding == "1" and int(parent) != os.getpid()  # the zygote's fork
        assert text(nb.cells[1]).strip() == "None"  # nothing left by the kernel before
        assert any("image/png" in o.get("data", {}) for o in nb.cells[2].outputs)  # the figure, shown inline
        assert [o.ename for o in nb.cells[3].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
        assert text(nb.cells[4]) == "after the interrupted cell\n"
    assert text(first.cells[0]).split()[0] != text(second.cells[0]).split()[0]  # two processes


def test_a_kernel_that_dies_is_reported_dead(zygote, tmp_path):
    with pytest.raises(DeadKernelError):
        run(["import os\nos._exit(1)", "print('never')"], tmp_path)


def test_without_a_zygote_the_kernel_starts_as_usual(tmp_path, monkeypatch):
    monkeypatch.delenv(warm_kernels.ZYGOTE, raising=False)
    nb = run(CELLS[:1], tmp_path)
    pid, parent, folder, _ = text(nb.cells[0]).split()
    assert folder == str(tmp_path)
