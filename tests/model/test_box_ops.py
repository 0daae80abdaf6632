"""box_ops against torchvision: IoU, clipping, small boxes, encode/decode, NMS, batched NMS."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_det_utils

from mrcnn_course.model import box_ops


def random_boxes(n: int, size: float = 100.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


EDGE_BOXES = {
    "ordinary": random_boxes(20),
    "one box": random_boxes(1),
    "no boxes": torch.zeros((0, 4)),
    "zero-area boxes": torch.tensor([[5.0, 5, 5, 5], [0, 0, 10, 0], [1, 1, 4, 4]]),
    "outside the image": torch.tensor([[-20.0, -10, -2, 30], [90, 95, 150, 160], [10, 10, 20, 20]]),
}


@pytest.mark.parametrize("case", list(EDGE_BOXES))
def test_box_iou_matches_torchvision(case):
    a, b = EDGE_BOXES[case], random_boxes(7, seed=1)
    torch.testing.assert_close(box_ops.box_iou(a, b), torchvision.ops.box_iou(a, b), equal_nan=True)
    torch.testing.assert_close(box_ops.box_iou(a, a), torchvision.ops.box_iou(a, a), equal_nan=True)


@pytest.mark.parametrize("case", list(EDGE_BOXES))
def test_clip_and_remove_small_match_torchvision(case):
    boxes = EDGE_BOXES[case]
    torch.testing.assert_close(
        box_ops.clip_boxes_to_image(boxes, (37, 61)), torchvision.ops.clip_boxes_to_image(boxes, (37, 61))
    )
    assert torch.equal(box_ops.remove_small_boxes(boxes, 1.0), torchvision.ops.remove_small_boxes(boxes, 1.0))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_match_torchvision(weights):
    anchors, gt = random_boxes(50, seed=2), random_boxes(50, seed=3)
    tv_coder = tv_det_utils.BoxCoder(weights)
    deltas = box_ops.encode_boxes(gt, anchors, weights)
    torch.testing.assert_close(deltas, tv_coder.encode_single(gt, anchors))
    # decode with 3 classes' deltas, including huge dw/dh that the clamp must stop
    wild = torch.randn(50, 12, generator=torch.Generator().manual_seed(4)) * 10
    torch.testing.assert_close(
        box_ops.decode_boxes(wild, anchors, weights), tv_coder.decode_single(wild, anchors).view(50, 3, 4)
    )
    assert torch.isfinite(box_ops.decode_boxes(wild, anchors, weights)).all()
    # round trip
    torch.testing.assert_close(box_ops.decode_boxes(deltas, anchors, weights)[:, 0], gt, rtol=1e-5, atol=1e-4)


def test_decode_clamp_is_log_1000_over_16():
    assert box_ops.BBOX_XFORM_CLIP == pytest.approx(math.log(1000 / 16))


NMS_CASES = {
    "ordinary": (random_boxes(200, seed=5), torch.rand(200, generator=torch.Generator().manual_seed(6))),
    "one box": (random_boxes(1), torch.tensor([0.3])),
    "no boxes": (torch.zeros((0, 4)), torch.zeros(0)),
    "identical boxes": (torch.tensor([[0.0, 0, 10, 10]] * 3), torch.tensor([0.1, 0.9, 0.5])),
    "chain of overlaps": (
        torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10], [9, 0, 19, 10]]),
        torch.tensor([0.9, 0.8, 0.7, 0.6]),
    ),
    "zero-area boxes": (torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 5, 5]]), torch.tensor([0.5, 0.4, 0.3])),
}


@pytest.mark.parametrize("case", list(NMS_CASES))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_nms_matches_torchvision(case, threshold):
    boxes, scores = NMS_CASES[case]
    assert torch.equal(box_ops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_many_boxes_matches_torchvision():
    boxes = random_boxes(3000, size=400, seed=7)
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(8))
    assert torch.equal(box_ops.nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))


@pytest.mark.parametrize("n", [0, 5, 300, 1500])  # both the offset path (<= 1000) and the per-category loop
def test_batched_nms_matches_torchvision(n):
    boxes = random_boxes(n, size=300, seed=9)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(10))
    idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(11))
    assert torch.equal(
        box_ops.batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    )


def textbook_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS, one kept box per Python step, with the package's box_iou: the definition nms must equal."""
    order, kept = scores.argsort(descending=True, stable=True), []
    while len(order):
        best, order = order[0], order[1:]
        kept.append(int(best))
        order = order[~(box_ops.box_iou(boxes[best][None], boxes[order])[0] > threshold)]
    return torch.tensor(kept, dtype=torch.int64)


def lesson_nms():
    """The nms of lesson 03's solution (the one the capstone trains on)."""
    import json
    from pathlib import Path

    from mrcnn_course.model import components

    notebook = json.loads((Path(__file__).parents[2] / "solutions/03_rpn/03a_anchors_and_boxes.ipynb").read_text())
    namespace = {"torch": torch, "components": components}
    exec("".join(next(c for c in notebook["cells"] if c.get("id") == "nms")["source"]), namespace)
    return namespace["nms"]


@pytest.mark.parametrize("implementation", ["package", "lesson 03"])
def test_matrix_nms_equals_greedy_nms_on_every_input(implementation):
    """Whole-pixel boxes (IoU often exactly at the threshold), zero-area ones, dense clusters (long chains of
    suppression), sizes across several blocks, thresholds 0 and 1."""
    nms = box_ops.nms if implementation == "package" else lesson_nms()
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(0, 3 * box_ops.NMS_BLOCK, (1,), generator=g))
        spread = [20.0, 60.0, 200.0][trial % 3]
        xy = (torch.rand(n, 2, generator=g) * spread).round()
        boxes = torch.cat([xy, xy + (torch.rand(n, 2, generator=g) * 30).round()], dim=1)
        scores = torch.randperm(n, generator=g).float()
        threshold = [0.0, 0.3, 0.5, 0.7, 1.0][trial % 5]
        assert torch.equal(nms(boxes, scores, threshold), textbook_nms(boxes, scores, threshold)), trial


def test_settle_block_on_a_chain():
    """0 suppresses 1, 1 would suppress 2, 2 would suppress 3: greedy keeps 0 and 2 (a suppressed box suppresses
    nothing), which takes the passes three rounds to find."""
    overlaps = torch.zeros(4, 4)  # 0/1 floats, as nms builds them
    overlaps[0, 1] = overlaps[1, 2] = overlaps[2, 3] = 1.0
    assert box_ops.settle_block(overlaps).tolist() == [True, False, True, False]
