"""Stage 6 against torchvision: head layout, mask targets, mask loss, pasting masks into the image."""

import pytest
import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads as TVMaskHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TVMaskPredictor

from mrcnn_course.model import torchvision_ops
from mrcnn_course.model.mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_loss,
    paste_masks_in_image,
    project_masks_on_boxes,
    select_class_masks,
)


def generator(seed: int) -> torch.Generator:
    """A fresh generator per test: each test's inputs are the same whichever tests ran before it."""
    return torch.Generator().manual_seed(seed)


def test_heads_have_torchvision_keys_and_outputs():
    g = generator(1)
    ours_head, ours_pred = MaskRCNNHeads(8, (16, 16)), MaskRCNNPredictor(16, 12, 4)
    tv_head, tv_pred = TVMaskHeads(8, [16, 16], 1), TVMaskPredictor(16, 12, 4)
    assert list(ours_head.state_dict()) == list(tv_head.state_dict())
    assert list(ours_pred.state_dict()) == list(tv_pred.state_dict())
    tv_head.load_state_dict(ours_head.state_dict()), tv_pred.load_state_dict(ours_pred.state_dict())
    x = torch.randn(3, 8, 14, 14, generator=g)
    out = ours_pred(ours_head(x))
    assert out.shape == (3, 4, 28, 28)
    torch.testing.assert_close(out, tv_pred(tv_head(x)))


def gt_masks(n: int, height: int, width: int) -> torch.Tensor:
    masks = torch.zeros(n, height, width, dtype=torch.uint8)
    for i in range(n):
        y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        cy, cx, r = height * (i + 1) / (n + 1), width / 2, min(height, width) / 4
        masks[i] = ((y - cy) ** 2 + (x - cx) ** 2 <= r**2).to(torch.uint8)
    return masks


BOXES = torch.tensor([[2.0, 3, 40, 30], [10.5, 0, 60.2, 45.7], [-5, -5, 20, 20], [30, 30, 30.5, 30.2]])


def test_project_masks_on_boxes_matches_torchvision():
    masks = gt_masks(3, 48, 64)
    matched = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(
        project_masks_on_boxes(masks, BOXES, matched, 28),
        torchvision_ops.project_masks_on_boxes(masks, BOXES, matched, 28),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("positives", [4, 0])
def test_maskrcnn_loss_matches_torchvision(positives):
    g = generator(2)
    logits = torch.randn(positives, 5, 28, 28, generator=g, requires_grad=True)
    masks = [gt_masks(3, 48, 64)]
    args = (logits, [BOXES[:positives]], masks, [torch.tensor([1, 4, 2])], [torch.tensor([0, 2, 1, 1])[:positives]])
    ours, theirs = maskrcnn_loss(*args), torchvision_ops.maskrcnn_loss(*args)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()  # still connected to the graph when there is nothing to learn from
    assert logits.grad is not None


@pytest.mark.parametrize("image_size", [(48, 64), (31, 17), (200, 300)])
def test_paste_masks_matches_torchvision(image_size):
    g = generator(3)
    probs = torch.rand(5, 1, 28, 28, generator=g)
    boxes = torch.cat([BOXES, torch.tensor([[0.0, 0, 0, 0]])])  # a zero-size box as well
    torch.testing.assert_close(
        paste_masks_in_image(probs, boxes, image_size), torchvision_ops.paste_masks_in_image(probs, boxes, image_size)
    )
    assert paste_masks_in_image(probs[:0], boxes[:0], image_size).shape == (0, 1, *image_size)


def test_select_class_masks_takes_each_detections_own_class():
    g = generator(4)
    logits = torch.randn(3, 4, 28, 28, generator=g)
    masks = select_class_masks(logits, [torch.tensor([2, 0]), torch.tensor([3])])
    assert [m.shape for m in masks] == [(2, 1, 28, 28), (1, 1, 28, 28)]
    torch.testing.assert_close(masks[1][0, 0], logits[2, 3].sigmoid())
