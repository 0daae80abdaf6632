"""Command line: train the small Mask R-CNN, evaluate a checkpoint, ship a trained model.

    python -m mrcnn_course train --epochs 8 --out runs/default [--seed 0 --images-per-epoch 400 --resume]
    torchrun --nproc_per_node=2 -m mrcnn_course train --out runs/ddp      # DistributedDataParallel
    python -m mrcnn_course evaluate --checkpoint runs/default/checkpoint.pt [--coco DIR]
    python -m mrcnn_course export-pretrained --checkpoint runs/default/checkpoint.pt   (maintainers)

`train` writes OUT/checkpoint.pt and OUT/trace.json after every epoch and OUT/curves.png at the end,
and prints the trace's table. Every option defaults to the course's recipe (Recipe).

Errors are one line, "error: ...", exit code 1 (2 for a bad option); Ctrl-C stops training between two
steps, says which checkpoint is kept, and exits with 130.
"""

import argparse
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from mrcnn_course.training import loop
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, OutputFolderError, load_checkpoint
from mrcnn_course.training.distributed import is_main_process
from mrcnn_course.training.recipe import Recipe, recipe_scenes
from mrcnn_course.training.stopping import TrainingDiverged, TrainingInterrupted
from mrcnn_course.training.training_trace import TOTAL

# train's options: Recipe field -> help. Each defaults to the Recipe's value (shown by --help).
RECIPE_OPTIONS = {
    "epochs": "epochs to train",
    "images_per_epoch": "training scenes per epoch",
    "val_images": "validation scenes, evaluated after every epoch",
    "batch_size": "scenes per step, over all processes",
    "image_size": "side of the square scenes, in pixels",
    "lr": "peak learning rate of the one-cycle schedule (AdamW)",
    "seed": "seed of the weights, the scenes and the sampling: the same seed gives the same trace",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return args.run(args)
        except (FileNotFoundError, FileExistsError, ValueError, OutputFolderError, TrainingDiverged) as error:
            parser.exit(1, f"error: {error}\n")  # a clear message, not a traceback
        except TrainingInterrupted as stopped:
            parser.exit(130, f"{stopped}\n")  # 130 = 128 + SIGINT, the shell's code for Ctrl-C


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line, "warning: ...", without the source line the default shows."""
    print(f"warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train the small model on synthetic scenes",
        description="Train maskrcnn_small on synthetic scenes (all five classes) and write "
        "OUT/checkpoint.pt and OUT/trace.json every epoch, OUT/curves.png at the "
        "end. Under torchrun each process trains on its share of every batch.",
    )
    train.add_argument("--out", required=True, type=Path, help="folder for the checkpoint, trace and curves")
    defaults = Recipe()
    types = {f.name: f.type for f in fields(Recipe)}
    for name, text in RECIPE_OPTIONS.items():
        train.add_argument(
            "--" + name.replace("_", "-"),
            type=types[name],
            default=getattr(defaults, name),
            help=f"{text} (default: %(default)s)",
        )
    train.add_argument(
        "--fixed-images",
        action="store_true",
        help="train on one fixed set of scenes, shuffled each epoch, instead of fresh scenes each epoch",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (same options as when it started; --lr may be "
        "lowered after a divergence). Without --threads it uses the thread count the run started with",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar (TQDM_DISABLE=1 does the same)")
    train.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: one per core). On cores shared with other work, 1 is often faster. "
        "Another thread count adds floats in another order: the losses differ by percents after an epoch, so "
        "the same seed repeats a run exactly only with the same count (saved in the checkpoint)",
    )
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="print a checkpoint's box and mask mAP",
        description="Evaluate a trained model with pycocotools: box and mask mAP and "
        "mAP@0.5, and detection accuracy. By default on the validation scenes "
        "of the checkpoint's recipe; with --coco on a COCO-format folder.",
    )
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="checkpoint.pt written by train (or its folder), or a saved state_dict",
    )
    evaluate.add_argument("--coco", type=Path, help="a COCO folder: annotations.json and images/ (coco.CocoFolder)")
    evaluate.add_argument(
        "--coco-annotations",
        default="annotations.json",
        help="the annotations json, relative to --coco (default: %(default)s; e.g. annotations/instances_val2017.json)",
    )
    evaluate.add_argument(
        "--coco-images",
        default="images",
        help="the images' folder, relative to --coco (default: %(default)s; e.g. val2017)",
    )
    evaluate.add_argument(
        "--images",
        type=int,
        default=200,
        help="generated validation scenes to evaluate on, without --coco (default: %(default)s)",
    )
    evaluate.set_defaults(run=run_evaluate)

    export = commands.add_parser(
        "export-pretrained",
        help="(maintainers) ship a run as mrcnn_course/training/pretrained",
        description="Write a train checkpoint's weights (float16) and its recipe.json into "
        "mrcnn_course/training/pretrained/, for load_pretrained_small().",
    )
    export.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt of a finished run")
    export.add_argument("--command", required=True, help="the exact command that trained it, for recipe.json")
    export.set_defaults(run=run_export)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from mrcnn_course.show.viz import draw_training_curves

    recipe = Recipe(**{name: getattr(args, name) for name in RECIPE_OPTIONS}, fresh_images=not args.fixed_images)
    if args.resume:
        checkpoint = load_checkpoint(args.out / CHECKPOINT_NAME)
        if isinstance(checkpoint, dict) and checkpoint.get("epoch", 0) >= recipe.epochs:
            print(
                f"the run in {args.out} already finished its {checkpoint['epoch']} epochs: nothing trained, "
                f"nothing written (its trace: {args.out / loop.TRACE_NAME}); to train more epochs, start a new "
                f"run in another folder"
            )
            return 0
        if not args.threads:  # the run's own count: another one would not resume it exactly
            args.threads = checkpoint.get("exactness", {}).get("threads") if isinstance(checkpoint, dict) else None
    if args.threads:
        torch.set_num_threads(args.threads)
    trace = loop.train(recipe=recipe, out=args.out, resume=args.resume, progress=not args.no_progress)
    # one line per process, so a torchrun log shows that every rank finished (and with the same loss)
    print(
        f"process {os.environ.get('RANK', 0)} of {os.environ.get('WORLD_SIZE', 1)}: "
        f"{len(trace.epochs)} epochs, final training loss {trace.epochs[-1].train_losses[TOTAL]:.6f}",
        flush=True,  # one write of its own: the ranks share the terminal
    )
    if is_main_process():
        figure = draw_training_curves(trace, len(trace.epochs))
        figure.savefig(args.out / "curves.png", dpi=100)
        print(trace.to_markdown())
        print(f"\nwrote {args.out / loop.TRACE_NAME}, {args.out / 'checkpoint.pt'}, {args.out / 'curves.png'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mrcnn_course.training import coco, data, evaluation
    from mrcnn_course.training.pretrained import model_from_checkpoint

    model, recipe = model_from_checkpoint(args.checkpoint)
    dataset: coco.CocoFolder | data.ShapesDataset
    if args.coco is not None:
        dataset = coco.CocoFolder(args.coco, args.coco_annotations, args.coco_images, num_classes=model.num_classes)
        where = f"the COCO folder {args.coco}"
    else:
        dataset, where = recipe_scenes(recipe, 0, args.images), f"{args.images} generated validation scenes"
    result = evaluation.evaluate(model, dataset)
    print(f"{args.checkpoint} on {where} ({len(dataset)} images):")
    for name in ("box_map", "box_map50", "mask_map", "mask_map50", "accuracy"):
        print(f"  {name:<11} {result[name]:.3f}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mrcnn_course.training.pretrained import export_pretrained

    folder = export_pretrained(args.checkpoint, args.command)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
