"""The training recipe: what the model trains on, for how long, at which learning rate, from which seed.

    recipe = Recipe(epochs=3)                      # the course's recipe, any field changed by keyword
    dataset, order = epoch_scenes(recipe, epoch)   # the scenes of an epoch and the order to visit them
    held_out = recipe_scenes(recipe, 0, 100)       # epoch 0: the validation scenes
    lr = recipe.lr * one_cycle(step, total_steps, recipe.warmup)

Everything a run draws depends on the seed and the epoch only (dataset_seed), so the same recipe gives
the same scenes in the same order, in a run that was stopped and resumed too. The defaults were chosen
with benchmarks/train_shapes.py; benchmarks/TUNING.md lists the runs that chose them and what else was tried.
"""

import json
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from mrcnn_course.training import data

SEEDS_PER_RUN = 10_000  # dataset seeds of run `seed`: seed * SEEDS_PER_RUN + epoch (0 = validation)


@dataclass(frozen=True)
class Recipe:
    """How to train: the data, the schedule and the seed. The defaults are the course's recipe
    (benchmarks/TUNING.md's run 20)."""

    epochs: int = 9  # 900 steps: enough for the mAP of benchmarks/TUNING.md's run 20, in the time budget
    images_per_epoch: int = 800  # 100 steps an epoch (fewer epochs of more scenes: fewer validations)
    fresh_images: bool = True  # new scenes every epoch: the model never sees one twice, so it cannot memorize
    val_images: int = 100  # validation scenes: losses, recall, precision and mAP each epoch
    shown_images: int = 4  # the first validation scenes, whose predictions the trace keeps per epoch
    batch_size: int = 8  # images per step, over all processes
    image_size: int = 128
    classes: tuple[str, ...] = ("square", "circle", "triangle", "dog", "cat")
    num_objects: tuple[int, int] = (1, 4)
    lr: float = 4e-3  # the one-cycle schedule's peak (AdamW); TUNING.md's runs 1 and 4-6 compare it with 2e-3
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

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), as stored in TrainingTrace.config."""
        return json.loads(json.dumps(asdict(self)))


def with_overrides(recipe: Recipe, overrides: dict) -> Recipe:
    """`recipe` with the fields named in `overrides` changed; a clear error for a name that is no field."""
    try:
        return replace(recipe, **overrides)
    except TypeError:
        raise TypeError(
            f"unknown recipe settings {sorted(set(overrides) - {f.name for f in fields(Recipe)})}: "
            f"choose from {[f.name for f in fields(Recipe)]}"
        ) from None


def one_cycle(step: int, total_steps: int, warmup: float) -> float:
    """The learning rate at `step` (0-based) as a share of the peak: a linear rise from 1/25 over the first
    `warmup` share of the steps, then a cosine fall towards 0 (Smith's one-cycle schedule; written here
    because torch's OneCycleLR fails on runs of a handful of steps)."""
    rise = max(1, round(warmup * total_steps))
    if step < rise:
        return 0.04 + 0.96 * step / rise
    return 0.5 * (1 + math.cos(math.pi * (step - rise) / max(1, total_steps - rise)))


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer: AdamW at the schedule's peak learning rate (the schedule scales it)."""
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def schedule_for(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's one-cycle schedule over all its steps (step() once after every training step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: one_cycle(step, recipe.total_steps, recipe.warmup))


def lower_learning_rate(recipe: Recipe) -> float:
    """The peak learning rate to advise after a divergence: a tenth of the recipe's, at most the course's."""
    return min(recipe.lr / 10, Recipe.lr)


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
