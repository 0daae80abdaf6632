"""Training the small Mask R-CNN on synthetic scenes, with a trace of what it learned, epoch by epoch.

    trace = train(epochs=5)                                # the course's recipe, 5 epochs
    trace = train(out="runs/demo")                         # + checkpoint.pt and trace.json each epoch
    trace = train(out="runs/demo", resume=True)            # continue a run that was stopped
    print(trace.to_markdown()); model = trace.model

train() builds a TrainingRun and loops over the epochs. Each epoch trains on `images_per_epoch` scenes
(fresh ones each epoch by default; recipe.py), then measures the loss on the validation scenes,
evaluates them with pycocotools (validation.py) and records it all in the TrainingTrace
(training_trace.py). The run is reproducible: the same seed gives the same trace, and a run killed
and resumed ends with the same trace as one that was not.

Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo
on CPU, nccl on GPUs); each step's batch is split between the ranks, rank 0 evaluates and writes the
trace and the checkpoints, and every rank returns the same trace.

Left out: mixed precision, multi-scale training, and data loading in worker processes (scenes are
drawn in the training process: num_workers=0 keeps the data order simple and exactly reproducible).
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from mrcnn_course.model import components
from mrcnn_course.model.maskrcnn import MaskRCNN, maskrcnn_small
from mrcnn_course.training import data, training_step
from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    OutputFolderLock,
    all_rng_states,
    check_output_on_rank_0,
    checkpoint_bytes,
    checkpoint_to_resume,
    load_model_state,
    lock_output_folder,
    on_rank_0,
    run_conditions,
    save_run,
    seed_everything,
    set_rng_state,
    warn_if_not_exact,
)
from mrcnn_course.training.distributed import World, start_distributed, to_device
from mrcnn_course.training.recipe import (
    Recipe,
    epoch_scenes,
    lower_learning_rate,
    one_cycle,
    optimizer_for,
    recipe_scenes,
    schedule_for,
    with_overrides,
)
from mrcnn_course.training.stopping import StopSignal, check_losses, interrupted
from mrcnn_course.training.training_step import GradientLimit, loss_tensor, step_batch
from mrcnn_course.training.training_trace import LOSS_NAMES, TOTAL, EpochRecord, TrainingTrace, observe
from mrcnn_course.training.validation import new_trace, validation_losses, validation_metrics

TRACE_NAME = "trace.json"


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
    losses: float}, default training_step.train_step (lesson 07 passes the learner's); its optimizer limits the
    gradient norm to recipe.grad_clip in step() before updating.
    time_limit: seconds for this call; after an epoch, if one more epoch as long as it would end past the
    limit, training stops there and that epoch's observation says so (a backstop for
    budget.fit_to_budget, whose estimate can be wrong on a busy machine).
    A NaN, infinite or exploding loss (stopping.EXPLODING_LOSS), in training or validation, raises
    TrainingDiverged, naming the loss, the epoch and the step; resume=True may then lower recipe.lr. Ctrl-C
    or SIGTERM stops between two steps with TrainingInterrupted. The output folder is created, locked for this
    run (another run into it is refused, checkpoints.FolderInUse) and checked before the first step; a resume
    that would not be bit-exact (another thread count) warns (ResumeNotExact).
    """
    recipe = with_overrides(recipe or Recipe(), overrides)
    world, device, started_here = start_distributed()
    run = TrainingRun(recipe, world, device, out, train_step or training_step.train_step)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    # the same seed must give the same trace; warn_only: a GPU op without a deterministic kernel warns
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        run.stop_signal.listen()  # Ctrl-C or SIGTERM now stops training between two steps
        run.start(model, resume)
        first, run_started = len(run.trace.epochs) + 1, time.perf_counter()
        # TQDM_DISABLE is read here: tqdm.auto's notebook bar passes disable=False to tqdm, which then
        # ignores the variable, and a kernel without a widget front end prints a frozen "0%| 0/N" (tqdm
        # itself takes any non-empty value as true)
        hidden = not progress or not world.is_rank_0 or bool(os.environ.get("TQDM_DISABLE"))
        steps_left = (recipe.epochs - first + 1) * recipe.steps_per_epoch
        with components.recording() as ran, tqdm(total=steps_left, unit="step", disable=hidden) as bar:
            for epoch in range(first, recipe.epochs + 1):
                started = time.perf_counter()
                bar.set_description(f"epoch {epoch}/{recipe.epochs}")
                train_losses, lr = run.train_epoch(epoch, bar, on_step)
                record = run.evaluate(epoch, train_losses, lr, started)
                out_of_time = world.broadcast_from_rank_0(
                    time_limit is not None
                    and epoch < recipe.epochs
                    and time.perf_counter() - run_started + record.seconds > time_limit
                )
                if out_of_time:
                    record.observation += (
                        f" Stopped after epoch {epoch} of {recipe.epochs}: another epoch would "
                        f"end past the time limit of {time_limit:.0f} s."
                    )
                run.add_epoch(record, ran)
                run.save(epoch)
                if on_epoch is not None:
                    on_epoch(run.trace, record)
                stop = run.stop_requested()  # asked of every process, so that all stop here together
                if stop:
                    raise interrupted(epoch, None, run.checkpoint_path, stop)
                if out_of_time:
                    break
    finally:
        run.stop_signal.stop_listening()
        run.release_folder()
        torch.use_deterministic_algorithms(was_deterministic)
        if started_here:
            dist.destroy_process_group()
    run.trace.model = run.model.eval()
    return run.trace


class TrainingRun:
    """One call of train(): the model and what trains it (optimizer, schedule, train_step), this process's
    place among the processes (world, device), where the run is saved (checkpoint_path, its folder held by
    folder_lock on rank 0) and whether Ctrl-C or SIGTERM came (stop_signal). start() takes the folder, builds
    or restores the model, its optimizer and schedule and the trace; then each epoch is train_epoch(),
    evaluate(), add_epoch() and save(); train() calls release_folder() at the end, however it ends."""

    model: MaskRCNN
    trainer: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer  # AdamW; train_step receives it wrapped in a GradientLimit
    schedule: torch.optim.lr_scheduler.LambdaLR  # the one-cycle learning rate, one step per training step
    validation: data.ShapesDataset  # the same scenes every epoch (recipe_scenes' epoch 0)
    trace: TrainingTrace  # the epochs so far (a resumed run starts with the checkpoint's)

    def __init__(
        self, recipe: Recipe, world: World, device: torch.device, out: str | os.PathLike | None, train_step: Callable
    ):
        self.recipe, self.world, self.device, self.train_step = recipe, world, device, train_step
        self.checkpoint_path = Path(out) / CHECKPOINT_NAME if out is not None else None
        self.stop_signal = StopSignal()
        self.folder_lock: OutputFolderLock | None = None  # rank 0's, while it trains into the folder
        self.note = ""  # said in the next epoch's observation: a resume that changed the learning rate
        self.components_before: dict[str, str] = {}  # what ran in the part of the run before a resume

    def start(self, model: MaskRCNN | None, resume: bool) -> None:
        """Build the model (a new maskrcnn_small if None), its optimizer and schedule, on this process's device,
        then continue the checkpoint's run (resume=True) or start a new trace. A folder that another run is
        using, that holds a run (without resume) or that cannot hold one is refused before any step."""
        recipe, world = self.recipe, self.world
        if self.checkpoint_path is not None:  # first: two runs must not both find the folder free of a checkpoint
            folder = self.checkpoint_path.parent
            self.folder_lock = on_rank_0(world, lambda: lock_output_folder(folder, create=not resume))
        checkpoint = checkpoint_to_resume(self.checkpoint_path, resume, recipe.to_dict(), world)
        seed_everything(recipe.seed)  # a new model's initial weights
        self.model = (model if model is not None else maskrcnn_small(num_classes=len(data.CLASSES))).to(self.device)
        self.optimizer = optimizer_for(self.model, recipe)
        if self.checkpoint_path is not None:
            check_output_on_rank_0(self.checkpoint_path.parent, checkpoint_bytes(self.model), world)
        self.schedule = schedule_for(self.optimizer, recipe)
        self.validation = recipe_scenes(recipe, 0, recipe.val_images)
        if checkpoint is None:
            self.trace = new_trace(recipe, self.validation)
            seed_everything(recipe.seed + world.rank)  # each rank samples anchors and RoIs from its own stream
        else:
            self.restore(checkpoint)
        self.trainer = nn.parallel.DistributedDataParallel(self.model) if world.size > 1 else self.model

    def release_folder(self) -> None:
        """Let other runs use the output folder (rank 0 holds it; the others do nothing)."""
        if self.folder_lock is not None:
            self.folder_lock.release()
            self.folder_lock = None

    def restore(self, checkpoint: dict) -> None:
        """Continue the checkpoint's run: weights, optimizer, schedule, trace and this process's random state."""
        load_model_state(self.model, checkpoint["model"], self.checkpoint_path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["scheduler"])
        self.trace = TrainingTrace.from_dict(checkpoint["trace"])
        set_rng_state(checkpoint["rng"][self.world.rank])
        warn_if_not_exact(checkpoint.get("exactness"), run_conditions(self.device))
        self.note = self.change_peak_learning_rate()
        # what ran is recorded over the whole run: the resumed part adds to what the first part recorded
        self.components_before = {
            name: source for name, source in self.trace.components.items() if source != components.NOT_CALLED
        }

    def change_peak_learning_rate(self) -> str:
        """On resume with another recipe.lr (the one setting a resume may change): continue the one-cycle schedule
        at its step, scaled to the new peak, and record the new recipe in the trace. Returns a sentence for the
        next epoch's observation ("" when the learning rate is unchanged)."""
        recipe, was = self.recipe, self.trace.config.get("lr")
        if was == recipe.lr:
            return ""
        for group in self.optimizer.param_groups:
            group["initial_lr"] = recipe.lr
            group["lr"] = recipe.lr * one_cycle(self.schedule.last_epoch, recipe.total_steps, recipe.warmup)
        self.schedule.base_lrs = [recipe.lr] * len(self.optimizer.param_groups)
        self.schedule._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what get_last_lr() reports
        self.trace.config = recipe.to_dict()
        return f" Resumed at a peak learning rate of {recipe.lr:g} (was {was:g})."

    def train_epoch(
        self, epoch: int, bar: tqdm, on_step: Callable[[StepInfo], None] | None
    ) -> tuple[dict[str, float], float]:
        """One epoch of steps, each train_step(trainer, optimizer, images, targets); returns the mean of each loss
        (TOTAL and LOSS_PARTS) over the steps, and the learning rate of the last step. Stops with TrainingDiverged
        on a bad loss, with TrainingInterrupted after the step in which Ctrl-C or SIGTERM came."""
        recipe, world = self.recipe, self.world
        self.trainer.train()
        optimizer = GradientLimit(self.optimizer, self.trainer.parameters(), recipe.grad_clip)
        dataset, order = epoch_scenes(recipe, epoch)
        sums = torch.zeros(len(LOSS_NAMES), dtype=torch.float64, device=self.device)
        for step in range(1, recipe.steps_per_epoch + 1):
            images, targets = to_device(step_batch(dataset, order, recipe.batch_size, step, world), self.device)
            lr = self.optimizer.param_groups[0]["lr"]
            losses = loss_tensor(self.train_step(self.trainer, optimizer, images, targets), self.device)  # (6,)
            losses = world.sum(losses) / world.size  # every rank sees the same, so all stop on a NaN together
            by_name = dict(zip(LOSS_NAMES, losses.tolist()))
            check_losses(by_name, epoch, step, self.checkpoint_path, lower_learning_rate(recipe))
            self.schedule.step()
            sums += losses
            bar.update()
            bar.set_postfix(loss=f"{by_name[TOTAL]:.3f}")
            if on_step is not None:
                on_step(StepInfo(epoch, step, recipe.steps_per_epoch, by_name, lr))
            stop = self.stop_requested()
            if stop:  # the step is done; the checkpoint is the last epoch's
                raise interrupted(epoch, step, self.checkpoint_path, stop)
        return dict(zip(LOSS_NAMES, (sums / recipe.steps_per_epoch).tolist())), lr

    def stop_requested(self) -> int:
        """The number of the stop signal (Ctrl-C's or SIGTERM's) that any process received, 0 if none: all of
        them stop after the same step. Two processes stopped by different signals report the larger number."""
        received = torch.tensor([float(self.stop_signal.received or 0)], device=self.device)
        if self.world.size > 1:
            dist.all_reduce(received, op=dist.ReduceOp.MAX)
        return int(received.item())

    def evaluate(self, epoch: int, train_losses: dict[str, float], lr: float, started: float) -> EpochRecord:
        """The epoch's record: the validation losses (checked like the training's), the metrics and an
        observation. started: time.perf_counter() when the epoch began."""
        recipe = self.recipe
        val_losses = validation_losses(self.model, self.validation, recipe.batch_size, recipe.seed, self.world)
        check_losses(val_losses, epoch, None, self.checkpoint_path, lower_learning_rate(recipe))
        metrics = validation_metrics(self.model, self.validation, recipe, self.world)
        seconds = time.perf_counter() - started
        record = EpochRecord(epoch, train_losses, val_losses, lr=lr, seconds=seconds, observation="", **metrics)
        previous = self.trace.epochs[-1] if self.trace.epochs else None
        record.observation, self.note = observe(record, previous, recipe.fresh_images) + self.note, ""
        return record

    def add_epoch(self, record: EpochRecord, ran: dict[str, str]) -> None:
        """Append `record` to the trace, with the components that ran so far (`ran`: components.recording's)."""
        self.trace.epochs.append(record)
        self.trace.components = components.ran_report({**self.components_before, **ran})

    def save(self, epoch: int) -> None:
        """Rewrite the checkpoint (all an exact resume needs) and the trace beside it, when the run has a folder."""
        if self.checkpoint_path is None:
            return
        checkpoint = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "rng": all_rng_states(self.world),
            "trace": self.trace.to_dict(),
            "recipe": self.recipe.to_dict(),
            "components": self.trace.components,
            "world_size": self.world.size,
            "exactness": run_conditions(self.device),
        }
        save_run(self.checkpoint_path, checkpoint, self.trace, self.checkpoint_path.with_name(TRACE_NAME), self.world)
