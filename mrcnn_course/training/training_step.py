"""One training step: the batch it takes, the step itself, the optimizer it receives, the losses it reports.

    images, targets = step_batch(dataset, order, recipe.batch_size, step)    # this process's share, collated
    optimizer = GradientLimit(optimizer_for(model, recipe), model.parameters(), recipe.grad_clip)
    losses = train_step(model, optimizer, images, targets)                   # {TOTAL: float, 'loss_mask': float, ...}
    loss_tensor(losses, device)                                              # Tensor[6] float64, in LOSS_NAMES order

train_step is the reference of lesson 07's exercise; train(train_step=...) runs a learner's own instead,
held to the same contract: it returns a dict of floats, TOTAL and each of LOSS_PARTS.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mrcnn_course.training import data
from mrcnn_course.training.distributed import SINGLE_PROCESS, World
from mrcnn_course.training.training_trace import LOSS_NAMES, LOSS_PARTS, TOTAL


def step_batch(
    dataset, order: Sequence[int], batch_size: int, step: int, world: World = SINGLE_PROCESS
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """The scenes of `step` (1-based) in visiting `order`, this process's share of them, collated."""
    batch = order[(step - 1) * batch_size : step * batch_size]
    return data.collate([dataset[i] for i in world.share(batch)])


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


def loss_tensor(losses, device: torch.device) -> Tensor:
    """What a training step returned, as Tensor[6] float64 in LOSS_NAMES order (TOTAL, then LOSS_PARTS), ready
    to be summed over steps and processes; a clear error if it is not the dict of floats a step returns."""
    if not isinstance(losses, dict) or any(name not in losses for name in LOSS_NAMES):
        got = sorted(losses) if isinstance(losses, dict) else type(losses).__name__
        raise ValueError(
            f"the training step returned {got}: it must return a dict with {list(LOSS_NAMES)} "
            f"(numbers), e.g. {{'total': loss.item(), 'loss_mask': losses['loss_mask'].item(), ...}}"
        )
    return torch.tensor([float(losses[name]) for name in LOSS_NAMES], dtype=torch.float64, device=device)
