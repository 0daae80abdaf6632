"""Stage 6 against torchvision: the head and predictor (keys, forward), mask targets, mask loss, pasting."""

import subprocess
import sys

import pytest
import torch
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads as TVMaskHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TVMaskPredictor

from mrcnn_course.model import components, mask_head, torchvision_ops
from mrcnn_course.model.mask_head import (
    MaskRCNNHeads,
    MaskRCNNPredictor,
    maskrcnn_heads,
    maskrcnn_loss,
    maskrcnn_predictor,
    paste_masks_in_image,
    project_masks_on_boxes,
    select_class_masks,
)


def generator(seed: int) -> torch.Generator:
    """A fresh generator per test: each test's inputs are the same whichever tests ran before it."""
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rois", [3, 1, 0])
@pytest.mark.parametrize("layers", [(16, 16), (16, 16, 16, 16)])
def test_heads_have_torchvision_keys_and_outputs(rois, layers):
    """The head's and the predictor's forward passes (maskrcnn_heads, maskrcnn_predictor) against torchvision's
    modules with the same weights (random biases: a missing ReLU shows), zero RoIs included."""
    g = generator(1)
    ours_head, ours_pred = MaskRCNNHeads(8, layers), MaskRCNNPredictor(16, 12, 4)
    tv_head, tv_pred = TVMaskHeads(8, list(layers), 1), TVMaskPredictor(16, 12, 4)
    assert list(ours_head.state_dict()) == list(tv_head.state_dict())
    assert list(ours_pred.state_dict()) == list(tv_pred.state_dict())
    for bias in [p for name, p in ours_head.named_parameters() if "bias" in name] + [ours_pred.conv5_mask.bias]:
        bias.data = torch.randn(bias.shape, generator=g)
    tv_head.load_state_dict(ours_head.state_dict()), tv_pred.load_state_dict(ours_pred.state_dict())
    x = torch.randn(rois, 8, 14, 14, generator=g)
    hidden = ours_head(x)
    assert hidden.shape == (rois, 16, 14, 14)
    torch.testing.assert_close(hidden, tv_head(x))
    torch.testing.assert_close(maskrcnn_heads(ours_head, x), tv_head(x))
    out = ours_pred(hidden)
    assert out.shape == (rois, 4, 28, 28)
    torch.testing.assert_close(out, tv_pred(tv_head(x)))
    torch.testing.assert_close(maskrcnn_predictor(ours_pred, hidden), tv_pred(hidden))


def test_the_head_and_predictor_forward_through_their_components():
    """Their forward calls components.maskrcnn_heads / maskrcnn_predictor with the module itself, so a learner's
    forward runs in the model while the state_dict keeps torchvision's keys."""
    head, predictor = MaskRCNNHeads(4, (4, 4)), MaskRCNNPredictor(4, 4, 3)
    seen = []

    def heads_seen(module, features):
        seen.append(module)
        return maskrcnn_heads(module, features)

    def predictor_seen(module, x):
        seen.append(module)
        return maskrcnn_predictor(module, x)

    with components.using(maskrcnn_heads=heads_seen, maskrcnn_predictor=predictor_seen):
        predictor(head(torch.randn(2, 4, 14, 14)))
    assert seen == [head, predictor]


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


def test_pasting_many_large_masks_stays_within_the_memory_limit(monkeypatch):
    """Above PASTE_MEMORY_LIMIT the masks are pasted a chunk at a time and kept as bool (100 masks of a
    4000 x 4000 photo: 1.6 GB instead of 6.4 GB); a small limit shows it on a small image."""
    masks = torch.rand(5, 1, 28, 28)
    boxes = torch.tensor([[4.0, 4, 40, 50], [0, 0, 63, 63], [10, 20, 30, 25], [50, 50, 70, 70], [1, 2, 3, 4]])
    probabilities = mask_head.paste_masks_within_memory(masks, boxes, (64, 64))
    assert probabilities.dtype == torch.float32  # under the limit: torchvision's probabilities
    monkeypatch.setattr(mask_head, "PASTE_MEMORY_LIMIT", 2 * 64 * 64 * 4)  # two float masks at a time
    with pytest.warns(UserWarning, match=r"5 masks of 64 x 64 as float probabilities would take .* returned as bool"):
        bounded = mask_head.paste_masks_within_memory(masks, boxes, (64, 64))
    assert bounded.dtype == torch.bool and torch.equal(bounded, probabilities > 0.5)


PASTE_PEAK = """
import resource, torch
from mrcnn_course.model import mask_head
mask_head.PASTE_MEMORY_LIMIT = 2**24  # 16 MB of float masks at a time
masks, boxes = torch.rand(24, 1, 28, 28), torch.tensor([[0.0, 0, 1999, 1999]]).repeat(24, 1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pasted = mask_head.paste_masks_within_memory(masks, boxes, (2000, 2000))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, pasted.dtype)
"""


@pytest.mark.slow
def test_pasting_masks_into_a_large_image_is_bounded_in_memory():
    """24 masks of 2000 x 2000 take 384 MB as float; pasted within a 16 MB limit the peak grows by the bool
    output (96 MB) and one chunk, not by the float masks (in a process of its own, to measure its peak)."""
    result = subprocess.run([sys.executable, "-c", PASTE_PEAK], capture_output=True, text=True, timeout=120)
    grown, dtype = result.stdout.split()
    assert dtype == "torch.bool" and "returned as bool masks" in result.stderr
    assert int(grown) < 0.6 * 24 * 2000 * 2000 * 4, f"the peak grew by {int(grown) / 1e6:.0f} MB"
