"""Training the small Mask R-CNN on synthetic scenes, with a trace of what it learned, epoch by epoch.

    trace = mrcnn_course.train(epochs=5)                   # the course's recipe, 5 epochs
    trace = train(recipe=recipe_for_notebooks())           # shortened when AUTOGRADING=1
    trace = train(out="runs/demo")                         # + checkpoint.pt and trace.json each epoch
    trace = train(out="runs/demo", resume=True)            # continue a run that was stopped
    print(trace.to_markdown()); model = trace.model

Each epoch trains on `images_per_epoch` scenes (fresh ones each epoch by default), then measures the
loss on the validation scenes, evaluates them with pycocotools (evaluation.evaluate) and records it
all in the TrainingTrace (training_trace.py). The run is reproducible: the same seed gives the same
trace, and a run killed and resumed ends with the same trace as one that was not.

Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo
on CPU, nccl on GPUs); each step's batch is split between the ranks, rank 0 evaluates and writes the
trace and the checkpoints, and every rank returns the same trace.

Left out: mixed precision, multi-scale training, and data loading in worker processes (scenes are
drawn in the training process: num_workers=0 keeps the data order simple and exactly reproducible).
"""

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from mrcnn_course.model import components
from mrcnn_course.model.maskrcnn import MaskRCNN, maskrcnn_small
from mrcnn_course.training import data, evaluation
from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    all_rng_states,
    check_output_on_rank_0,
    checkpoint_bytes,
    checkpoint_to_resume,
    load_model_state,
    run_conditions,
    save_run,
    seed_everything,
    set_rng_state,
    warn_if_not_exact,
)
from mrcnn_course.training.distributed import broadcast_from_rank_0, start_distributed, to_device
from mrcnn_course.training.encoding import encode_detections, encode_image
from mrcnn_course.training.stopping import CtrlC, check_losses, interrupted
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, EpochRecord, TrainingTrace, observe

TRACE_NAME = "trace.json"
SEEDS_PER_RUN = 10_000  # dataset seeds of run `seed`: seed * SEEDS_PER_RUN + epoch (0 = validation)


@dataclass(frozen=True)
class Recipe:
    """How to train: the data, the schedule and the seed. The defaults are the course's recipe, measured
    with benchmarks/train_shapes.py (benchmarks/TUNING.md lists what else was tried)."""

    epochs: int = 9  # 900 steps, under 4 minutes on 2 cores: mask mAP@0.5 0.967 (benchmarks/TUNING.md)
    images_per_epoch: int = 800  # 100 steps an epoch (fewer epochs of more scenes: fewer validations)
    fresh_images: bool = True  # new scenes every epoch: the model never sees one twice, so it cannot memorize
    val_images: int = 100  # validation scenes: losses, accuracy and mAP each epoch
    shown_images: int = 4  # the first validation scenes, whose predictions the trace keeps per epoch
    batch_size: int = 8  # images per step, over all processes
    image_size: int = 128
    classes: tuple[str, ...] = ("square", "circle", "triangle", "dog", "cat")
    num_objects: tuple[int, int] = (1, 4)
    lr: float = 4e-3  # the one-cycle schedule's peak (AdamW); 2e-3 gave mask mAP@0.5 0.914 against 0.919
    warmup: float = 0.25  # share of the steps spent raising the learning rate to its peak
    weight_decay: float = 1e-4
    grad_clip: float = 10.0  # gradient norm limit: keeps early steps from throwing the weights far
    seed: int = 0

    def __post_init__(self):
        problems = [
            f"{name} must be at least 1 (got {getattr(self, name)})"
            for name in ("epochs", "images_per_epoch", "val_images", "batch_size")
            if getattr(self, name) < 1
        ]
        if self.images_per_epoch < self.batch_size:
            problems.append(f"images_per_epoch ({self.images_per_epoch}) is less than one batch ({self.batch_size})")
        if self.shown_images < 0:
            problems.append(f"shown_images must be at least 0 (got {self.shown_images})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number (got {self.lr}); the course's is {Recipe.lr}")
        if not 0 <= self.warmup <= 1:
            problems.append(f"warmup is a share of the steps, between 0 and 1 (got {self.warmup}); 0.25 is a quarter")
        if not 0 <= self.weight_decay < 1:
            problems.append(f"weight_decay must lie in [0, 1) (got {self.weight_decay}); the course's is 1e-4")
        if not self.grad_clip >= 0:  # a negative limit would flip every gradient: gradient ascent
            problems.append(f"grad_clip must be 0 (no limit) or a positive gradient norm (got {self.grad_clip})")
        if not isinstance(self.image_size, int) or self.image_size < data.MIN_SIDE:
            problems.append(f"image_size must be an integer of at least {data.MIN_SIDE} pixels (got {self.image_size})")
        if len(self.num_objects) != 2 or not 0 <= self.num_objects[0] <= self.num_objects[1]:
            problems.append(f"num_objects must be (fewest, most) with 0 <= fewest <= most (got {self.num_objects})")
        unknown = [c for c in self.classes if c not in data.CLASSES[1:]]
        if unknown or not self.classes:
            problems.append(f"classes {list(self.classes)}: choose from {list(data.CLASSES[1:])}")
        if problems:
            raise ValueError("bad training recipe: " + "; ".join(problems))

    @property
    def steps_per_epoch(self) -> int:
        return self.images_per_epoch // self.batch_size  # a last partial batch is dropped

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), as stored in TrainingTrace.config."""
        return json.loads(json.dumps(asdict(self)))


# Under nbgrader autograding (AUTOGRADING=1) a lesson's training must take seconds, not minutes.
QUICK = dict(epochs=2, images_per_epoch=16, val_images=8, shown_images=2, batch_size=4, image_size=64)


def autograding() -> bool:
    return os.environ.get("AUTOGRADING") == "1"


def recipe_for_notebooks(**overrides) -> Recipe:
    """The recipe a lesson trains with: the default (with `overrides`), or, when AUTOGRADING=1, the QUICK
    one (2 short epochs of 64-px scenes) so that grading a class stays fast."""
    return Recipe(**{**overrides, **QUICK}) if autograding() else Recipe(**overrides)


def one_cycle(step: int, total_steps: int, warmup: float) -> float:
    """The learning rate at `step` (0-based) as a share of the peak: a linear rise from 1/25 over the first
    `warmup` share of the steps, then a cosine fall towards 0 (Smith's one-cycle schedule; written here
    because torch's OneCycleLR fails on runs of a handful of steps)."""
    rise = max(1, round(warmup * total_steps))
    if step < rise:
        return 0.04 + 0.96 * step / rise
    return 0.5 * (1 + math.cos(math.pi * (step - rise) / max(1, total_steps - rise)))


def dataset_seed(seed: int, epoch: int) -> int:
    """Seed of the training scenes of `epoch` (1-based) of run `seed`; epoch 0 gives the validation scenes."""
    return seed * SEEDS_PER_RUN + epoch


def recipe_scenes(recipe: Recipe, epoch: int, count: int) -> data.ShapesDataset:
    """`count` scenes of the recipe's kind, seeded by dataset_seed(recipe.seed, epoch)."""
    return data.ShapesDataset(
        count, recipe.image_size, dataset_seed(recipe.seed, epoch), recipe.classes, recipe.num_objects
    )


def epoch_scenes(recipe: Recipe, epoch: int) -> tuple[data.ShapesDataset, list[int]]:
    """The scenes of `epoch` and the order to visit them: fresh scenes in order, or (fresh_images=False)
    one fixed set of scenes, shuffled differently each epoch. Both depend on the seed and epoch only."""
    if recipe.fresh_images:
        return recipe_scenes(recipe, epoch, recipe.images_per_epoch), list(range(recipe.images_per_epoch))
    shuffle = torch.Generator().manual_seed(dataset_seed(recipe.seed, epoch))
    return recipe_scenes(recipe, 1, recipe.images_per_epoch), torch.randperm(
        recipe.images_per_epoch, generator=shuffle
    ).tolist()


@dataclass
class StepInfo:
    """What on_step receives after each training step. Losses are averaged over the processes."""

    epoch: int
    step: int  # 1-based, within the epoch
    steps: int  # steps per epoch
    losses: dict[str, float]  # TOTAL and the five LOSS_PARTS
    lr: float


def train(
    model: MaskRCNN | None = None,
    recipe: Recipe | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[TrainingTrace, EpochRecord], None] | None = None,
    progress: bool = True,
    train_step: Callable | None = None,
    time_limit: float | None = None,
    **overrides,
) -> TrainingTrace:
    """Train `model` (default: a new maskrcnn_small for all data.CLASSES) by `recipe` (default Recipe(),
    with any Recipe field overridden by keyword, e.g. epochs=3) and return its TrainingTrace; the trained
    model is trace.model.

    out: a folder for checkpoint.pt and trace.json, both rewritten after every epoch. resume=True
    continues from out/checkpoint.pt (it must exist and have the same recipe); without it, a folder that
    already holds a checkpoint is refused rather than overwritten. on_step(StepInfo) runs after each
    step, on_epoch(trace, record) after each epoch. progress=False hides the bar (TQDM_DISABLE=1 too).
    train_step: the training step, train_step(model, optimizer, images, targets) -> {TOTAL and each of the five
    losses: float}, default train_step (lesson 07 passes the learner's); its optimizer limits the gradient
    norm to recipe.grad_clip in step() before updating.
    time_limit: seconds for this call; after an epoch, if one more epoch as long as it would end past the
    limit, training stops there and that epoch's observation says so (a backstop for
    training_budget.fit_to_budget, whose estimate can be wrong on a busy machine).
    A NaN, infinite or exploding loss (stopping.EXPLODING_LOSS), in training or validation, raises
    TrainingDiverged, naming the loss, the epoch and the step; resume=True may then lower recipe.lr. Ctrl-C
    stops between two steps with TrainingInterrupted. The output folder is created and checked before the
    first step; a resume that would not be bit-exact (another thread count) warns (ResumeNotExact).
    """
    try:
        recipe = replace(recipe or Recipe(), **overrides)
    except TypeError:
        raise TypeError(
            f"unknown recipe settings {sorted(set(overrides) - {f.name for f in fields(Recipe)})}: "
            f"choose from {[f.name for f in fields(Recipe)]}"
        ) from None
    rank, world, device, started_here = start_distributed()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    # the same seed must give the same trace; warn_only: a GPU op without a deterministic kernel warns
    torch.use_deterministic_algorithms(True, warn_only=True)
    ctrl_c = CtrlC()
    try:
        ctrl_c.listen()  # Ctrl-C now stops training between two steps
        checkpoint_path = Path(out) / CHECKPOINT_NAME if out is not None else None
        checkpoint = checkpoint_to_resume(checkpoint_path, resume, recipe.to_dict(), world)
        seed_everything(recipe.seed)
        model = (model if model is not None else maskrcnn_small(num_classes=len(data.CLASSES))).to(device)
        optimizer = optimizer_for(model, recipe)
        if out is not None:
            check_output_on_rank_0(Path(out), checkpoint_bytes(model), rank, world)
        total_steps = recipe.epochs * recipe.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step_index: one_cycle(step_index, total_steps, recipe.warmup)
        )
        validation = recipe_scenes(recipe, 0, recipe.val_images)
        lr_note = ""  # said in the first resumed epoch's observation when the resume changed the learning rate
        if checkpoint is None:
            trace = new_trace(recipe, validation)
            seed_everything(recipe.seed + rank)  # each rank samples anchors and RoIs from its own stream
        else:
            load_model_state(model, checkpoint["model"], checkpoint_path)
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            trace = TrainingTrace.from_dict(checkpoint["trace"])
            set_rng_state(checkpoint["rng"][rank])
            warn_if_not_exact(checkpoint.get("exactness"), run_conditions(device))
            lr_note = change_peak_learning_rate(optimizer, scheduler, trace, recipe, total_steps)
        trainer = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        first = len(trace.epochs) + 1
        run_started = time.perf_counter()
        # what ran, recorded over the whole run (a resumed run adds to what the first part recorded)
        ran = {name: source for name, source in trace.components.items() if source != components.NOT_CALLED}
        # tqdm reads TQDM_DISABLE=1 itself (only when `disable` is not passed)
        with (
            components.recording() as ran_now,
            tqdm(
                total=(recipe.epochs - first + 1) * recipe.steps_per_epoch,
                unit="step",
                **({} if progress and rank == 0 else {"disable": True}),
            ) as bar,
        ):
            for epoch in range(first, recipe.epochs + 1):
                started = time.perf_counter()
                bar.set_description(f"epoch {epoch}/{recipe.epochs}")
                train_losses, lr = train_one_epoch(
                    trainer,
                    optimizer,
                    scheduler,
                    recipe,
                    epoch,
                    rank,
                    world,
                    bar,
                    on_step,
                    checkpoint_path,
                    train_step,
                    ctrl_c,
                )
                val_losses = validation_losses(model, validation, recipe.batch_size, recipe.seed, rank, world)
                check_losses(val_losses, epoch, None, checkpoint_path, lower_learning_rate(recipe))
                figures = evaluate_on_rank_0(model, validation, recipe, rank, world)
                record = EpochRecord(
                    epoch,
                    train_losses,
                    val_losses,
                    lr=lr,
                    seconds=time.perf_counter() - started,
                    observation="",
                    **figures,
                )
                record.observation = observe(record, trace.epochs[-1] if trace.epochs else None, recipe.fresh_images)
                record.observation, lr_note = record.observation + lr_note, ""
                out_of_time = broadcast_from_rank_0(
                    time_limit is not None
                    and epoch < recipe.epochs
                    and time.perf_counter() - run_started + record.seconds > time_limit,
                    world,
                )
                if out_of_time:
                    record.observation += (
                        f" Stopped after epoch {epoch} of {recipe.epochs}: another epoch would "
                        f"end past the time limit of {time_limit:.0f} s."
                    )
                trace.epochs.append(record)
                trace.components = components.ran_report({**ran, **ran_now})
                states = all_rng_states(world)
                if checkpoint_path is not None:
                    save_run(
                        checkpoint_path,
                        {
                            "epoch": epoch,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": states,
                            "trace": trace.to_dict(),
                            "recipe": recipe.to_dict(),
                            "components": trace.components,
                            "world_size": world,
                            "exactness": run_conditions(device),
                        },
                        trace,
                        checkpoint_path.with_name(TRACE_NAME),
                        rank,
                        world,
                    )
                if on_epoch is not None:
                    on_epoch(trace, record)
                if ctrl_c.pressed:
                    raise interrupted(epoch, None, checkpoint_path)
                if out_of_time:
                    break
    finally:
        ctrl_c.stop_listening()
        torch.use_deterministic_algorithms(was_deterministic)
        if started_here:
            dist.destroy_process_group()
    trace.model = model.eval()
    return trace


def train_one_epoch(
    trainer: nn.Module,
    optimizer,
    scheduler,
    recipe: Recipe,
    epoch: int,
    rank: int,
    world: int,
    bar,
    on_step,
    checkpoint_path: Path | None,
    step_fn: Callable | None = None,
    ctrl_c: CtrlC | None = None,
) -> tuple[dict[str, float], float]:
    """One epoch of steps, each `step_fn(trainer, optimizer, images, targets)` (default train_step); returns
    the mean of each loss (TOTAL and LOSS_PARTS) over the steps, and the learning rate of the last step.
    Stops with TrainingDiverged on a bad loss, with TrainingInterrupted after the step in which Ctrl-C was
    pressed (ctrl_c.pressed)."""
    trainer.train()
    step_fn = step_fn or train_step
    clipped = GradientLimit(optimizer, trainer.parameters(), recipe.grad_clip)
    device = next(trainer.parameters()).device
    dataset, order = epoch_scenes(recipe, epoch)
    sums = torch.zeros(1 + len(LOSS_PARTS), dtype=torch.float64, device=device)
    for step in range(1, recipe.steps_per_epoch + 1):
        images, targets = to_device(step_batch(dataset, order, recipe.batch_size, step, rank, world), device)
        lr = optimizer.param_groups[0]["lr"]
        figures = step_figures(step_fn(trainer, clipped, images, targets), device)  # (6,) float64
        if world > 1:  # every rank sees the same figures, so every rank stops on a NaN together
            dist.all_reduce(figures)
            figures /= world
        named = dict(zip((TOTAL, *LOSS_PARTS), figures.tolist()))
        check_losses(named, epoch, step, checkpoint_path, lower_learning_rate(recipe))
        scheduler.step()
        sums += figures
        bar.update()
        bar.set_postfix(loss=f"{named[TOTAL]:.3f}")
        if on_step is not None:
            on_step(StepInfo(epoch, step, recipe.steps_per_epoch, named, lr))
        if stop_requested(ctrl_c, world, device):  # the step is done; the checkpoint is the last epoch's
            raise interrupted(epoch, step, checkpoint_path)
    return dict(zip((TOTAL, *LOSS_PARTS), (sums / recipe.steps_per_epoch).tolist())), lr


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer: AdamW at the schedule's peak learning rate (the scheduler scales it)."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def stop_requested(ctrl_c: CtrlC | None, world: int, device: torch.device) -> bool:
    """Whether Ctrl-C was pressed, in any process: all of them stop after the same step."""
    pressed = torch.tensor([float(ctrl_c is not None and ctrl_c.pressed)], device=device)
    if world > 1:
        dist.all_reduce(pressed)
    return bool(pressed.item())


def lower_learning_rate(recipe: Recipe) -> float:
    """The peak learning rate to advise after a divergence: a tenth of the recipe's, at most the course's."""
    return min(recipe.lr / 10, Recipe.lr)


def change_peak_learning_rate(optimizer, scheduler, trace: TrainingTrace, recipe: Recipe, total_steps: int) -> str:
    """On resume with another recipe.lr (the one setting a resume may change): continue the one-cycle schedule
    at its step, scaled to the new peak, and record the new recipe in the trace. Returns a sentence for the
    next epoch's observation ("" when the learning rate is unchanged)."""
    was = trace.config.get("lr")
    if was == recipe.lr:
        return ""
    for group in optimizer.param_groups:
        group["initial_lr"] = recipe.lr
        group["lr"] = recipe.lr * one_cycle(scheduler.last_epoch, total_steps, recipe.warmup)
    scheduler.base_lrs = [recipe.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    trace.config = recipe.to_dict()
    return f" Resumed at a peak learning rate of {recipe.lr:g} (was {was:g})."


def step_batch(
    dataset, order: list[int], batch_size: int, step: int, rank: int = 0, world: int = 1
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """The scenes of `step` (1-based) in visiting `order`, this rank's share of them, collated."""
    batch = order[(step - 1) * batch_size : step * batch_size][rank::world]
    return data.collate([dataset[i] for i in batch])


def train_step(model: nn.Module, optimizer, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, float]:
    """One step of gradient descent on a batch: model(images, targets) in training mode gives the five
    losses; their sum is differentiated and the optimizer updates the weights.

    images: list of N Tensor[3, H, W]; targets: list of N dicts (boxes Tensor[G, 4], labels Tensor[G],
    masks Tensor[G, H, W]). Returns {TOTAL: the summed loss, and each of LOSS_PARTS} as Python floats."""
    losses = model(images, targets)
    loss = sum(losses[name] for name in LOSS_PARTS)
    optimizer.zero_grad(set_to_none=True)  # backward adds to the gradients that are there
    loss.backward()
    optimizer.step()
    return {TOTAL: loss.item(), **{name: losses[name].item() for name in LOSS_PARTS}}


class GradientLimit:
    """The optimizer a training step receives: step() first scales the gradients down to a total norm of at
    most `max_norm` (0: no limit), then updates; everything else is the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, parameters, max_norm: float):
        self.optimizer, self.parameters, self.max_norm = optimizer, list(parameters), max_norm

    def step(self, closure=None):
        if self.max_norm:
            nn.utils.clip_grad_norm_(self.parameters, self.max_norm)
        return self.optimizer.step(closure)

    def __getattr__(self, name):  # zero_grad, param_groups, state_dict, ...
        return getattr(self.optimizer, name)


def step_figures(losses, device) -> Tensor:
    """A step's returned losses as Tensor[6] float64 (TOTAL, then LOSS_PARTS); a clear error if they are not
    the dict of floats a training step returns."""
    expected = (TOTAL, *LOSS_PARTS)
    if not isinstance(losses, dict) or any(name not in losses for name in expected):
        got = sorted(losses) if isinstance(losses, dict) else type(losses).__name__
        raise ValueError(
            f"the training step returned {got}: it must return a dict with {list(expected)} "
            f"(numbers), e.g. {{'total': loss.item(), 'loss_mask': losses['loss_mask'].item(), ...}}"
        )
    return torch.tensor([float(losses[name]) for name in expected], dtype=torch.float64, device=device)


@torch.no_grad()
def validation_losses(
    model: MaskRCNN, dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1
) -> dict[str, float]:
    """Mean losses (TOTAL and LOSS_PARTS) per image on `dataset`, without changing the model.

    The model runs in training mode (only then does it compute losses), but its batch-norm layers are
    switched to eval mode: they normalize with their running statistics, as at inference, and those
    statistics are not updated. The anchors and RoIs that the losses sample are drawn from a generator
    seeded with `seed` (torch.random.fork_rng), so every epoch is measured on the same samples and the
    training's random stream is not touched. With several processes each takes its share of the images.
    """
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(2 + len(LOSS_PARTS), dtype=torch.float64, device=device)  # images, TOTAL, parts
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mine = list(range(rank, len(dataset), world))
            for start in range(0, len(mine), batch_size):
                images, targets = to_device(
                    data.collate([dataset[i] for i in mine[start : start + batch_size]]), device
                )
                losses = model(images, targets)
                parts = torch.stack([losses[k] for k in LOSS_PARTS]).double()
                sums += len(images) * torch.cat([parts.new_ones(1), parts.sum(0, keepdim=True), parts])
    finally:
        model.train(was_training)
    if world > 1:
        dist.all_reduce(sums)
    return dict(zip((TOTAL, *LOSS_PARTS), (sums[1:] / sums[0]).tolist()))


def evaluate_on_rank_0(model: MaskRCNN, validation, recipe: Recipe, rank: int, world: int) -> dict:
    """Accuracy, the four mAPs and the shown images' predictions (rank 0 evaluates, the others receive them)."""
    figures = None
    if rank == 0:
        result = evaluation.evaluate(model, validation, batch_size=recipe.batch_size)
        figures = {
            "accuracy": result["accuracy"],
            **{k: result[k] for k in ("box_map", "box_map50", "mask_map", "mask_map50")},
            "predictions": [encode_detections(p) for p in result["predictions"][: recipe.shown_images]],
        }
    return broadcast_from_rank_0(figures, world)


def new_trace(recipe: Recipe, validation) -> TrainingTrace:
    shown = [validation[i] for i in range(min(recipe.shown_images, len(validation)))]
    return TrainingTrace(
        [],
        [encode_image(image) for image, _ in shown],
        list(data.CLASSES),
        recipe.to_dict(),
        recipe.seed,
        [encode_detections(target) for _, target in shown],
    )
