"""The capstone as a learner runs it: does its training fit the course's budget on this machine?

    .venv/bin/python benchmarks/capstone.py            # about 8 minutes on 2 cores

In a temporary course home it runs the solutions of lessons 01-06, which save their components, and
then lesson 07's solution with the full recipe, in real kernels (no AUTOGRADING: autograding saves
nothing and trains a short run), as a learner who finished every lesson would. The solutions' functions
are the learner's components here (lesson 03's matrix-form NMS among them). It prints what fit_to_budget
measured and decided, the training time against budget.TRAINING_BUDGET, and the capstone's mAP table (yours against
the reference). Exits with 1 if the training ran over the budget.
"""

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mrcnn_course.training.budget import TRAINING_BUDGET

ROOT = Path(__file__).resolve().parents[1]
LESSONS = [
    f"0{n}_{name}"
    for n, name in enumerate(["input_image", "backbone", "rpn", "roi_align", "box_head", "mask_head"], start=1)
]


def run(lesson: str, env: dict[str, str]) -> tuple[nbformat.NotebookNode, float]:
    notebook = nbformat.read(ROOT / "solutions" / lesson / f"{lesson}.ipynb", as_version=4)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits the environment
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "solutions" / lesson)}},
    ).execute()
    return notebook, time.perf_counter() - start


def text_of(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/markdown" in output.get("data", {}):
            parts.append(output.data["text/markdown"])
    return "".join(parts).strip()


def main() -> int:
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as home:
        env = {**{k: v for k, v in saved.items() if k != "AUTOGRADING"}, "MRCNN_COURSE_HOME": home, "TQDM_DISABLE": "1"}
        for lesson in LESSONS:
            _, seconds = run(lesson, env)
            print(f"{lesson}: {seconds:.0f} s", flush=True)
        capstone, seconds = run("07_training", env)
    os.environ.clear()
    os.environ.update(saved)
    print(f"07_training: {seconds:.0f} s in all\n")
    print(text_of(capstone, "setup"), "\n")
    print(text_of(capstone, "recipe"), "\n")
    trained = text_of(capstone, "train")
    print(trained, "\n")
    print(text_of(capstone, "map"), "\n")
    training_seconds = float(re.search(r"epochs in (\d+) s", trained).group(1))
    print(
        f"training {training_seconds:.0f} s of the budget's {TRAINING_BUDGET:.0f} s "
        f"({training_seconds / TRAINING_BUDGET:.2f} of it)"
    )
    return 0 if training_seconds <= TRAINING_BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
