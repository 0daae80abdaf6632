"""The reference's held-out figures for each recipe of fit_to_budget's menu, written beside the shipped model.

    .venv/bin/python benchmarks/reference_figures.py --runs runs/reference    # about 20 min on 2 cores

The capstone compares a learner's model with the reference trained by the same recipe, whatever share of the
recipe's scenes per epoch the budget allowed (budget.STEP_SHARES). For the whole recipe the reference is the
shipped model; for each smaller share this trains the package's model by that recipe (seed 0, one thread:
tests/training/test_pretrained.py re-trains the smallest the same way and expects the same figures) into
RUNS/share_NN (a stopped run is resumed, a finished one reused), with 4 validation scenes an epoch (validation
does not change the weights). Then it evaluates each on the capstone's held-out scenes and writes them into
mrcnn_course/training/pretrained/reference_figures.json (--shares 0.5: that share's only; the file keeps the rest).
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from mrcnn_course.training.budget import STEP_SHARES, recipe_share
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from mrcnn_course.training.loop import train
from mrcnn_course.training.pretrained import (
    FOLDER,
    REFERENCE_FIGURES,
    held_out_figures,
    load_pretrained_small,
    model_from_checkpoint,
    pretrained_recipe,
    training_recipe,
    write_reference_figures,
)
from mrcnn_course.training.recipe import Recipe

THREADS = 1  # the test re-trains with one thread: the same sums in the same order, the same figures


def share_recipe(share: float) -> Recipe:
    """The menu's recipe for `share` of the scenes per epoch, with 4 validation scenes (cheap; no effect on
    the weights)."""
    return replace(recipe_share(Recipe(), share), val_images=4)


def trained(share: float, runs: Path):
    """The reference trained by the share's recipe: from its finished run in `runs`, or trained now."""
    recipe = share_recipe(share)
    out = runs / f"share_{round(share * 100)}"
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.is_file() and load_checkpoint(checkpoint).get("epoch") == recipe.epochs:
        return model_from_checkpoint(checkpoint)[0]
    return train(recipe=recipe, out=out, resume=checkpoint.is_file(), progress=False).model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/reference"), help="folder for the training runs")
    parser.add_argument(
        "--shares", type=float, nargs="+", default=STEP_SHARES, help="the shares to (re)do; the file keeps the others"
    )
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    shipped = FOLDER / REFERENCE_FIGURES
    runs = json.loads(shipped.read_text())["runs"] if shipped.is_file() else []
    for share in sorted(args.shares):
        recipe = share_recipe(share)
        whole = share == 1.0  # the shipped model was trained by the whole recipe
        model = load_pretrained_small() if whole else trained(share, args.runs)
        figures = held_out_figures(model, recipe)
        threads = pretrained_recipe()["cores"] if whole else THREADS
        runs = [run for run in runs if run["recipe"] != training_recipe(recipe)]  # this share's, replaced
        runs.append(
            {"recipe": training_recipe(recipe), "steps": recipe.total_steps, "threads": threads, "held_out": figures}
        )
        print(f"{share:.0%} of the scenes, {recipe.total_steps} steps: {figures}", flush=True)
    path = write_reference_figures(sorted(runs, key=lambda run: run["steps"]), "python benchmarks/reference_figures.py")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
