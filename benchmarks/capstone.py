"""The capstone as a learner runs it, every lesson solved: does its training fit the budget, and does the model
end level with the reference trained by the same recipe?

    .venv/bin/python benchmarks/capstone.py                 # about 12 minutes on 2 cores
    .venv/bin/python benchmarks/capstone.py --share 0.25    # force a recipe of the budget's menu
    .venv/bin/python benchmarks/capstone.py --seconds 900   # another budget

In a temporary course home it runs the solutions of lessons 01-06 (every notebook of each), which save their
components, then the capstone (07b) with the course's recipe, in real kernels (no AUTOGRADING: autograding
saves nothing and trains a short run), as a learner who finished every lesson would: the solutions' functions
are the learner's components here. It prints what fit_to_budget measured and decided (the package's steps and
the solutions' in turns), the training time against the budget, the components that ran, and the table: the
solutions' model against the reference trained by the same recipe (and the shipped model). Exits with 1 if
the training ran more than 5% over the budget, or if the model is not level with the reference (held-out mask mAP@0.5
within pretrained.LEVEL) when the recipe has the reference's figures.
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mrcnn_course.training.budget import TRAINING_BUDGET
from mrcnn_course.training.pretrained import LEVEL

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ["01_input_image", "02_backbone", "03_rpn", "04_roi_align", "05_box_head", "06_mask_head"]
CAPSTONE = ROOT / "solutions" / "07_training" / "07b_capstone.ipynb"
FIT_CALL = "fit_to_budget(recipe, train_step=step, components=mine)"  # the capstone's call, as written
# the budget is a target, not a wall (train()'s backstop is 1.5x the estimate, so that no epoch is cut): the estimate
# rests on a few timed steps, which vary by 10% or more from step to step, so a run may end a few percent over it
OVERRUN_ALLOWED = 1.05


def run(notebook: nbformat.NotebookNode, folder: Path, env: dict[str, str]) -> float:
    """Execute `notebook` in a kernel started in `folder` with environment `env`; returns the seconds."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits the environment
    try:
        start = time.perf_counter()
        NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(saved)


def text_of(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/markdown" in output.get("data", {}):
            parts.append(output.data["text/markdown"])
    return "\n".join(part.strip() for part in parts)


def capstone(seconds: float, share: float | None) -> nbformat.NotebookNode:
    """The capstone notebook, its fit_to_budget call given `seconds` (and the menu cut to `share`, if given)."""
    notebook = nbformat.read(CAPSTONE, as_version=4)
    cell = next(c for c in notebook.cells if c.get("id") == "recipe")
    assert FIT_CALL in cell.source, f"the capstone's recipe cell no longer calls {FIT_CALL}: update this script"
    shares = f", shares=({share},)" if share is not None else ""
    cell.source = cell.source.replace(
        FIT_CALL, f"fit_to_budget(recipe, seconds={seconds}, train_step=step, components=mine{shares})"
    )
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=TRAINING_BUDGET, help="the training budget")
    parser.add_argument("--share", type=float, default=None, help="force this share of the menu (e.g. 0.25)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k != "AUTOGRADING"}
        env |= {"MRCNN_COURSE_HOME": home, "TQDM_DISABLE": "1"}
        for lesson in LESSONS:
            for path in sorted((ROOT / "solutions" / lesson).glob("*.ipynb")):
                seconds = run(nbformat.read(path, as_version=4), path.parent, env)
                print(f"{path.stem}: {seconds:.0f} s", flush=True)
        notebook = capstone(args.seconds, args.share)
        seconds = run(notebook, CAPSTONE.parent, env)
    print(f"{CAPSTONE.stem}: {seconds:.0f} s in all (load average now {os.getloadavg()[0]:.1f})\n")
    for cell_id in ("setup", "recipe", "train", "map"):
        print(text_of(notebook, cell_id), "\n")
    trained = text_of(notebook, "train")
    training_seconds = float(re.search(r"in (\d+) s with the validations", trained).group(1))
    used = training_seconds / args.seconds
    print(f"training {training_seconds:.0f} s of the budget's {args.seconds:.0f} s ({used:.2f} of it)")
    verdict = text_of(notebook, "map")
    level = ": level" in verdict or "no fair comparison" in verdict or "not one of them" in verdict
    if not level:
        print(f"not level with the reference trained alike (within {LEVEL})")
    if training_seconds > OVERRUN_ALLOWED * args.seconds:
        print(f"over the budget by more than {OVERRUN_ALLOWED - 1:.0%}: fit_to_budget's estimate was too low")
    return 0 if training_seconds <= OVERRUN_ALLOWED * args.seconds and level else 1


if __name__ == "__main__":
    sys.exit(main())
