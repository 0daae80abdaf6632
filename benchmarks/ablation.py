"""The ablation lab's table: the small model trained by the course's recipe with one change at a time
(mrcnn_course.training.ablation.CHANGES), each measured on the same held-out scenes, beside the default
trained twice (seeds 0 and 1: how far two runs differ by chance alone).

    python benchmarks/ablation.py                    # every change, the course's recipe (about 6 runs x 5 min)
    python benchmarks/ablation.py --only roi_pool --epochs 2 --images-per-epoch 64   # a quick look
    python benchmarks/ablation.py --write            # ... and ship the table (training/pretrained/ablation.json)

Each run's figures depend on the recipe and seed only (not on the machine's speed or load): training
runs a fixed number of steps. The load average is printed to say what the seconds mean.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace

from mrcnn_course.training import ablation
from mrcnn_course.training.recipe import Recipe

COLUMNS = ("box_map", "box_map50", "mask_map", "mask_map50", "recall", "precision")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write(rows: list[dict], recipe: Recipe, held_out: int, argv: list[str]) -> None:
    """Merge `rows` into the shipped table: a row replaces the one of the same change and seed; rows of another
    recipe (the seed aside) or held-out set are dropped (they would not compare)."""
    recipe = replace(recipe, seed=Recipe.seed)  # each row says its seed
    shipped: dict = {"rows": [], "commands": []}
    if ablation.RESULTS.is_file():
        shipped = json.loads(ablation.RESULTS.read_text())
        if shipped.get("recipe") != recipe.to_dict() or shipped.get("held_out_images") != held_out:
            shipped = {"rows": [], "commands": []}
    fresh = {(row["change"], row["seed"]) for row in rows}
    kept = [row for row in shipped["rows"] if (row["change"], row["seed"]) not in fresh] + rows
    order = list(ablation.CHANGES)
    shipped.update(
        commands=[*shipped.get("commands", []), "python benchmarks/ablation.py " + " ".join(argv)],
        recipe=recipe.to_dict(),
        held_out_images=held_out,
        load_average=load(),
        cores=os.cpu_count(),
        rows=sorted(kept, key=lambda row: (order.index(row["change"]), row["seed"])),
    )
    ablation.RESULTS.write_text(json.dumps(shipped, indent=1) + "\n")
    print(f"\nwritten to {ablation.RESULTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(ablation.CHANGES), help="these changes only")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs)
    parser.add_argument("--images-per-epoch", type=int, default=Recipe.images_per_epoch)
    parser.add_argument("--held-out", type=int, default=100, help="held-out scenes each model is measured on")
    parser.add_argument("--no-seed-row", action="store_true", help="skip the default's second seed")
    parser.add_argument("--seed", type=int, default=Recipe.seed, help="the seed of the runs --only names")
    parser.add_argument("--write", action="store_true", help=f"write the table to {ablation.RESULTS}")
    args = parser.parse_args(argv)
    # validation every epoch only feeds the training trace: 20 scenes are enough, the held-out set measures
    recipe = Recipe(epochs=args.epochs, images_per_epoch=args.images_per_epoch, val_images=20, seed=args.seed)
    runs = [(name, recipe) for name in (args.only or ablation.CHANGES)]
    if not args.no_seed_row and not args.only:
        runs.insert(1, ("default", replace(recipe, seed=recipe.seed + 1)))
    print(f"load average before: {load()} on {os.cpu_count()} cores", flush=True)
    rows = []
    for name, run_recipe in runs:
        started = time.monotonic()
        row = ablation.train_with_change(name, run_recipe, held_out_images=args.held_out)
        row["seed"] = run_recipe.seed
        row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(f"{name} (seed {run_recipe.seed}): {json.dumps(row)}  load {load()}", flush=True)
    print(
        f"\n{recipe.epochs * (recipe.images_per_epoch // recipe.batch_size)} steps per run, held-out mAP on "
        f"{args.held_out} scenes; load average after: {load()}\n"
    )
    print("| change | seed | " + " | ".join(COLUMNS) + " | seconds |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for row in rows:
        print(
            f"| {row['title']} | {row['seed']} | "
            + " | ".join(f"{row[k]:.3f}" for k in COLUMNS)
            + f" | {row['seconds']:.0f} |"
        )
    if args.write:
        write(rows, recipe, args.held_out, argv if argv is not None else sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
