"""Command line: train the small Mask R-CNN, evaluate a checkpoint, ship a trained model.

    python -m mrcnn_course train --epochs 8 --out runs/default [--seed 0 --images-per-epoch 400 --resume]
    torchrun --nproc_per_node=2 -m mrcnn_course train --out runs/ddp      # DistributedDataParallel
    python -m mrcnn_course evaluate --checkpoint runs/default/checkpoint.pt [--coco DIR]
    python -m mrcnn_course export-pretrained --checkpoint runs/default/checkpoint.pt   (maintainers)

`train` writes OUT/checkpoint.pt and OUT/trace.json after every epoch and OUT/curves.png at the end,
and prints the trace's table. Every option defaults to the course's recipe (Recipe).

Errors are one line, "error: ...", exit code 1 (2 for a bad option); Ctrl-C or SIGTERM (kill, a job
scheduler) stops training between two steps, says which checkpoint is kept, and exits with the shell's
code for the signal: 130 for Ctrl-C, 143 for SIGTERM. An output folder takes one run at a time: a second
run into a busy folder is refused and names the first run's process.
"""

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import torch

from mrcnn_course.training import loop
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, OutputFolderError, load_checkpoint, replace_whole
from mrcnn_course.training.distributed import cores_available, cpus_available, is_main_process
from mrcnn_course.training.recipe import Recipe, recipe_scenes
from mrcnn_course.training.stopping import STOP_SIGNALS, TrainingDiverged, TrainingInterrupted
from mrcnn_course.training.training_trace import TOTAL, TrainingTrace

CURVES_NAME = "curves.png"  # written by train at the end, beside checkpoint.pt and trace.json

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
    with warnings.catch_warnings(), sigterm_as_interrupt():
        warnings.showwarning = show_warning
        try:
            return args.run(args)
        except (FileNotFoundError, FileExistsError, ValueError, OutputFolderError, TrainingDiverged) as error:
            parser.exit(1, f"error: {error}\n")  # a clear message, not a traceback
        except TrainingInterrupted as stopped:
            # the shell's code for a process ended by a signal: 128 + SIGINT = 130, 128 + SIGTERM = 143
            parser.exit(128 + stopped.signal_number, f"{stopped}\n")
        except KeyboardInterrupt as stopped:  # outside training: while loading, evaluating or drawing
            number = getattr(stopped, "signal_number", signal.SIGINT)
            parser.exit(
                128 + number,
                f"{STOP_SIGNALS[number]}: stopped; every file the course writes is replaced whole, so none is "
                f"left half-written\n",
            )


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (training stops between two steps by itself: stopping.StopSignal)."""

    signal_number = signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM (kill, a job scheduler, a JupyterHub) stops it like Ctrl-C, with a line
    that says so, rather than ending the process without a word; the previous handler is put back after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signal_number, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    train.add_argument(
        "--out",
        required=True,
        type=output_folder,
        help="folder for the checkpoint, trace and curves (one run at a time)",
    )
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
        help="torch threads, from 1 to the CPUs available (default: one per core). On cores shared with other "
        "work, 1 is often faster. "
        "Another thread count adds floats in another order: the losses differ by percents after an epoch, so "
        "the same seed repeats a run exactly only with the same count (saved in the checkpoint)",
    )
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="print a checkpoint's box and mask mAP",
        description="Evaluate a trained model with pycocotools: box and mask mAP and "
        "mAP@0.5, and recall and precision at score >= 0.5. By default on the validation scenes "
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
        type=at_least_one,
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


def output_folder(text: str) -> Path:
    """--out's type: a folder name, not empty (Path("") is the current folder, which would fill with a run)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a folder for the run's files, e.g. --out runs/first")
    return Path(text)


def at_least_one(text: str) -> int:
    """A count's type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def check_threads(threads: int) -> None:
    """--threads: from 1 to the CPUs available (a ValueError otherwise); above the cores, a warning."""
    cpus, cores = cpus_available(), cores_available()
    if not 1 <= threads <= cpus:
        raise ValueError(
            f"--threads {threads}: choose from 1 to {cpus}, the CPUs this process may use (more threads than "
            f"CPUs only wait on each other)"
        )
    if threads > cores:
        warnings.warn(
            f"--threads {threads} is more than the {cores} cores: two threads on one core share it, and training "
            f"is often faster with --threads {cores}",
            stacklevel=2,
        )


def nothing_to_train(out: Path, checkpoint: dict, epochs: int) -> str | None:
    """What a resume with --epochs `epochs` says when the run in `out` has trained that many already (None:
    there is something to train). Another number of epochs than planned changes the learning-rate schedule,
    which checkpoints.checkpoint_to_resume refuses."""
    trained = checkpoint.get("epoch", 0)
    if trained < epochs:
        return None
    planned = checkpoint.get("recipe", {}).get("epochs", trained)
    if trained == epochs == planned:
        head = f"the run in {out} has trained all its {trained} epochs"
    else:
        fewer = "no more" if epochs == trained else "fewer"
        head = f"the run in {out} has trained {trained} of its {planned} epochs; --epochs {epochs} asks for {fewer}"
    advice = (
        f"to finish it, resume with --epochs {planned}"
        if trained < planned
        else "to train longer, start a new run with a larger --epochs in another folder"
    )
    return f"{head}: nothing to train, nothing written (its trace: {out / loop.TRACE_NAME}); {advice}"


def run_train(args: argparse.Namespace) -> int:
    recipe = Recipe(**{name: getattr(args, name) for name in RECIPE_OPTIONS}, fresh_images=not args.fixed_images)
    if args.threads is not None:
        check_threads(args.threads)
    if args.resume:
        checkpoint = load_checkpoint(args.out / CHECKPOINT_NAME)
        if isinstance(checkpoint, dict):  # else: train() says why it cannot be resumed
            said = nothing_to_train(args.out, checkpoint, recipe.epochs)
            if said is not None:
                print(said)
                return 0
            saved = checkpoint.get("exactness", {}).get("threads")
            # the run's own count, unless given: another one would not resume it exactly (nor one above the CPUs)
            if args.threads is None and saved is not None and saved <= cpus_available():
                args.threads = saved
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
        print(trace.to_markdown())
        save_curves(trace, args.out / CURVES_NAME)
        print(f"\nwrote {args.out / loop.TRACE_NAME}, {args.out / CHECKPOINT_NAME}, {args.out / CURVES_NAME}")
    return 0


def save_curves(trace: TrainingTrace, path: Path) -> None:
    """Draw the trace's curves into `path` (PNG), replaced whole: a full disk leaves the previous picture, if
    any, and says that the run's own files are complete (the picture only draws trace.json)."""
    from mrcnn_course.show.viz import draw_training_curves

    figure = draw_training_curves(trace, len(trace.epochs))
    try:
        replace_whole(path, lambda file: figure.savefig(file, dpi=100, format="png"))
    except OSError as error:
        raise OutputFolderError(
            f"the run is complete ({path.parent / CHECKPOINT_NAME} and {path.parent / loop.TRACE_NAME} are written "
            f"whole), but {path.name} was not ({error.strerror or error}): free some space; the picture only draws "
            f"the trace: show.viz.draw_training_curves(TrainingTrace.load({str(path.parent / loop.TRACE_NAME)!r}), "
            f"{len(trace.epochs)}).savefig({str(path)!r})"
        ) from None


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
    for name in ("box_map", "box_map50", "mask_map", "mask_map50", "recall", "precision"):
        print(f"  {name:<11} {result[name]:.3f}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mrcnn_course.training.pretrained import export_pretrained

    folder = export_pretrained(args.checkpoint, args.command)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
