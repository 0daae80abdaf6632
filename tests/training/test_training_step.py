"""One training step: its batch (this process's share), the gradient limit, what a step must return."""

import pytest
import torch

from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import data
from mrcnn_course.training.distributed import World
from mrcnn_course.training.training_step import GradientLimit, loss_tensor, step_batch
from mrcnn_course.training.training_trace import LOSS_NAMES


def test_the_gradient_limit_scales_the_gradients_before_updating():
    model = maskrcnn_small(num_classes=len(data.CLASSES))
    limited = GradientLimit(torch.optim.SGD(model.parameters(), lr=0.0), model.parameters(), 1.0)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 10.0)
    limited.step()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm.item() == pytest.approx(1.0, rel=1e-3)
    assert limited.param_groups[0]["lr"] == 0.0  # the rest is the wrapped optimizer's


def test_each_process_takes_its_share_of_a_step_batch():
    scenes = data.ShapesDataset(8, 32, seed=1)
    order = [7, 6, 5, 4, 3, 2, 1, 0]
    whole, _ = step_batch(scenes, order, 4, 2)  # step 2: scenes 3, 2, 1, 0
    shares = [step_batch(scenes, order, 4, 2, World(rank, 2))[0] for rank in (0, 1)]
    assert [len(images) for images in shares] == [2, 2]
    assert torch.equal(shares[0][0], whole[0]) and torch.equal(shares[1][0], whole[1])  # ranks take turns
    assert torch.equal(shares[0][1], whole[2]) and torch.equal(shares[1][1], whole[3])


def test_a_steps_losses_become_a_tensor_in_loss_names_order():
    losses = {name: float(i) for i, name in enumerate(reversed(LOSS_NAMES))}
    tensor = loss_tensor(losses, torch.device("cpu"))
    assert tensor.dtype == torch.float64 and tensor.tolist() == [losses[name] for name in LOSS_NAMES]
