"""Train the small Mask R-CNN from scratch on synthetic scenes, on 2 CPU threads, against torchvision's.

    .venv/bin/python benchmarks/train_shapes.py                       # the course's recipe, both models
    .venv/bin/python benchmarks/train_shapes.py --only ours --epochs 6 --lr 3e-3    # a tuning run
    .venv/bin/python benchmarks/train_shapes.py --model rpn_pre_nms_top_n_train=300  # a SmallConfig change

For each model (ours: mrcnn_course.model.maskrcnn.maskrcnn_small; torchvision's: torchvision.models.detection.MaskRCNN
built with the same SmallConfig by torchvision_ops.torchvision_maskrcnn_small) it trains with the same
recipe (Recipe, the course's default unless options change it) and prints the wall time, the
training time (the steps only, without the per-epoch evaluation), the steps, the final losses, and
box and mask mAP and mAP@0.5 on 200 held-out scenes that neither training nor validation saw.

The step-time ratio (ours / torchvision's) is measured apart, by alternating single steps of the two
models on the same batches, so that a load change on the shared machine hits both alike.
Goals (issue 16): mask mAP@0.5 >= 0.95 within 5 minutes of training steps; step time <= 0.80x torchvision's.
"""

import argparse
import ast
import os
import statistics
import sys
import time
from dataclasses import fields, replace

import torch
import torchvision

from mrcnn_course.model.backbone import BackboneWithFPN
from mrcnn_course.model.maskrcnn import MaskRCNN, SmallConfig
from mrcnn_course.model.torchvision_ops import torchvision_maskrcnn_small
from mrcnn_course.training import data, evaluation, loop
from mrcnn_course.training.pretrained import HELD_OUT_EPOCH
from mrcnn_course.training.recipe import Recipe, recipe_scenes

HELD_OUT = 200
GOAL_MASK_MAP50, GOAL_SECONDS, GOAL_STEP_RATIO = 0.95, 300, 0.80


def build(which: str, config: SmallConfig):
    torch.manual_seed(0)
    if which == "ours":  # maskrcnn_small's construction, with a changed SmallConfig (it takes no config)
        return MaskRCNN(
            BackboneWithFPN(config.backbone, config.fpn_channels), len(data.CLASSES), **config.model_kwargs()
        )
    return torchvision_maskrcnn_small(len(data.CLASSES), config)


def parse_config(settings: list[str]) -> SmallConfig:
    """SmallConfig with KEY=VALUE changes (VALUE a Python literal, e.g. mask_layers=(64,64,64))."""
    changes = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in {f.name for f in fields(SmallConfig)} or not value:
            raise SystemExit(
                f"--model {setting!r}: use KEY=VALUE with KEY one of {[f.name for f in fields(SmallConfig)]}"
            )
        changes[key] = ast.literal_eval(value)
    return replace(SmallConfig(), **changes)


def train_and_evaluate(which: str, recipe: Recipe, config: SmallConfig) -> dict:
    """Train a new `which` model by `recipe`; its times, final losses and held-out figures."""
    step_seconds = []
    last = [time.perf_counter()]

    def on_step(info: loop.StepInfo) -> None:
        now = time.perf_counter()
        if info.step > 1:  # the first step of an epoch follows the previous epoch's evaluation
            step_seconds.append(now - last[0])
        last[0] = now

    def on_epoch(trace, record) -> None:
        print(
            f"  {which} epoch {record.epoch}: loss {record.train_losses['total']:.3f}, mask mAP@0.5 "
            f"{record.mask_map50:.3f}, {record.seconds:.0f} s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    start = time.perf_counter()
    trace = loop.train(build(which, config), recipe, on_step=on_step, on_epoch=on_epoch, progress=False)
    wall = time.perf_counter() - start
    steps = recipe.epochs * recipe.steps_per_epoch
    held_out = evaluation.evaluate(trace.model, recipe_scenes(recipe, HELD_OUT_EPOCH, HELD_OUT))
    return {
        "model": which,
        "wall": wall,
        "train": statistics.mean(step_seconds) * steps,
        "steps": steps,
        "step": statistics.median(step_seconds),
        "trace": trace,
        **{k: held_out[k] for k in ("box_map", "box_map50", "mask_map", "mask_map50", "recall", "precision")},
    }


def alternated_step_ratio(recipe: Recipe, config: SmallConfig, steps: int = 12) -> tuple[float, float]:
    """Median seconds per training step of ours and torchvision's, alternating step by step on the same batches."""
    models = {which: build(which, config).train() for which in ("ours", "torchvision")}
    optimizers = {w: torch.optim.AdamW(m.parameters(), lr=recipe.lr / 10) for w, m in models.items()}
    scenes = recipe_scenes(recipe, 1, recipe.batch_size * steps)
    times = {w: [] for w in models}
    for step in range(steps):
        images, targets = data.collate(
            [scenes[i] for i in range(step * recipe.batch_size, (step + 1) * recipe.batch_size)]
        )
        for which, model in models.items():
            started = time.perf_counter()
            loss = sum(model(images, targets).values())
            optimizers[which].zero_grad()
            loss.backward()
            optimizers[which].step()
            if step >= 2:  # two warm-up steps
                times[which].append(time.perf_counter() - started)
    return statistics.median(times["ours"]), statistics.median(times["torchvision"])


def report(result: dict) -> None:
    losses = result["trace"].epochs[-1].train_losses
    print(
        f"{result['model']:<12} wall {result['wall']:6.1f} s  training {result['train']:6.1f} s  "
        f"{result['steps']} steps ({result['step']:.3f} s/step)  "
        f"box mAP {result['box_map']:.3f} mAP@0.5 {result['box_map50']:.3f}  "
        f"mask mAP {result['mask_map']:.3f} mAP@0.5 {result['mask_map50']:.3f}  "
        f"recall {result['recall']:.3f} precision {result['precision']:.3f} (score >= 0.5)"
    )
    print(f"{'':<12} final losses: " + ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items()))
    print(f"{'':<12} mask mAP@0.5 by epoch: " + " ".join(f"{e.mask_map50:.2f}" for e in result["trace"].epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("ours", "torchvision"), help="train one model only (tuning runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s, the 2 cores)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a SmallConfig default for this run (both models), e.g. rpn_pre_nms_top_n_train=300",
    )
    parser.add_argument("--ratio-steps", type=int, default=12, help="alternated steps for the step-time ratio")
    for f in fields(Recipe):
        if f.type in (int, float, "int", "float"):
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                type=float if "float" in str(f.type) else int,
                help=f"Recipe.{f.name} (default {f.default})",
            )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = replace(
        Recipe(),
        **{f.name: getattr(args, f.name) for f in fields(Recipe) if getattr(args, f.name, None) is not None},
    )
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    config = parse_config(args.model)
    print(f"recipe: {recipe.to_dict()}")
    print(f"model changes: {args.model or 'none (SmallConfig defaults)'}")
    results = [
        train_and_evaluate(which, recipe, config) for which in ([args.only] if args.only else ["ours", "torchvision"])
    ]
    for result in results:
        report(result)
    ours = results[0]
    if ours["model"] == "ours":
        verdict = "met" if ours["mask_map50"] >= GOAL_MASK_MAP50 and ours["train"] <= GOAL_SECONDS else "NOT met"
        print(f"goal mask mAP@0.5 >= {GOAL_MASK_MAP50} within {GOAL_SECONDS} s of training: {verdict}")
    if not args.only:
        t_ours, t_theirs = alternated_step_ratio(recipe, config, args.ratio_steps)
        print(
            f"step time, alternated: ours {t_ours:.3f} s, torchvision {t_theirs:.3f} s, "
            f"ratio {t_ours / t_theirs:.2f} (goal <= {GOAL_STEP_RATIO:.2f}: "
            f"{'met' if t_ours <= GOAL_STEP_RATIO * t_theirs else 'NOT met'})"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    sys.exit(main())
