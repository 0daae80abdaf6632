"""Stage 4 against torchvision: RoI Align (values and gradients), the level mapper, the multi-scale pooler."""

from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign as TVMultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

from mrcnn_course.model.roi_align import MultiScaleRoIAlign, map_levels, roi_align


def generator(seed: int) -> torch.Generator:
    """A fresh generator per test: each test's inputs are the same whichever tests ran before it."""
    return torch.Generator().manual_seed(seed)


FEATURES = torch.randn(2, 5, 23, 31, generator=generator(0))  # odd sizes

BOX_CASES = {
    "ordinary": torch.tensor([[0, 1.0, 2, 20, 15], [1, 5.5, 3.2, 29.7, 22.1], [0, 10, 10, 12, 30]]),
    "one box": torch.tensor([[1, 3.0, 4, 9, 8]]),
    "no boxes": torch.zeros((0, 5)),
    "zero-area boxes": torch.tensor([[0, 5.0, 5, 5, 5], [1, 7, 3, 7, 10]]),
    "outside the map": torch.tensor([[0, -10.0, -8, -2, -1], [1, 25, 18, 45, 40], [0, -3, -3, 40, 30]]),
    "tiny boxes": torch.tensor([[0, 4.2, 4.3, 4.4, 4.9], [1, 0.0, 0, 0.5, 0.5]]),
    "last row and column": torch.tensor([[0, 29.5, 21.5, 31, 23], [1, 0, 22, 31, 23]]),
}


@pytest.mark.parametrize("case", list(BOX_CASES))
@pytest.mark.parametrize(
    "output_size, scale, sampling_ratio, aligned",
    [
        (7, 1.0, 2, False),
        (14, 0.5, 2, False),
        (3, 1.0, -1, False),
        (7, 1.0, 2, True),
        (5, 0.25, -1, True),
        ((4, 6), 1.0, 1, False),
    ],
)
def test_roi_align_matches_torchvision(case, output_size, scale, sampling_ratio, aligned):
    boxes = BOX_CASES[case] / torch.tensor([1, scale, scale, scale, scale])  # in image pixels
    expected = torchvision.ops.roi_align(FEATURES, boxes, output_size, scale, sampling_ratio, aligned)
    got = roi_align(FEATURES, boxes, output_size, scale, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_roi_align_accepts_a_list_of_boxes_per_image():
    boxes = [torch.tensor([[1.0, 2, 20, 15]]), torch.tensor([[5.5, 3.2, 29.7, 22.1], [0, 0, 3, 3]])]
    torch.testing.assert_close(
        roi_align(FEATURES, boxes, 7, 1.0, 2),
        torchvision.ops.roi_align(FEATURES, boxes, 7, 1.0, 2),
        rtol=1e-5,
        atol=1e-5,
    )


def test_roi_align_large_adaptive_grid_and_one_pixel_map():
    g = generator(1)
    big = torch.randn(1, 2, 200, 150, generator=g)
    boxes = torch.tensor([[0, 0.0, 0, 150, 200], [0, 10, 20, 140, 60]])
    torch.testing.assert_close(
        roi_align(big, boxes, 28, 1.0, -1), torchvision.ops.roi_align(big, boxes, 28, 1.0, -1), rtol=1e-5, atol=1e-5
    )
    one = torch.randn(1, 3, 1, 1, generator=g)
    boxes = torch.tensor([[0, -0.5, -0.5, 0.7, 0.9], [0, 0, 0, 3, 3]])
    torch.testing.assert_close(roi_align(one, boxes, 2, 1.0, 2), torchvision.ops.roi_align(one, boxes, 2, 1.0, 2))


def test_roi_align_gradient_matches_torchvision():
    g = generator(2)
    boxes = BOX_CASES["ordinary"]
    ours, theirs = FEATURES.clone().requires_grad_(), FEATURES.clone().requires_grad_()
    weights = torch.randn(3, 5, 7, 7, generator=g)
    (roi_align(ours, boxes, 7, 1.0, 2) * weights).sum().backward()
    (torchvision.ops.roi_align(theirs, boxes, 7, 1.0, 2) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)


def test_map_levels_matches_torchvision():
    sides = torch.tensor([1.0, 10, 111.9, 112, 223.9, 224, 447, 448, 1000, 0])  # around each level's edge
    boxes = [torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)]
    expected = LevelMapper(2, 5)(boxes)
    assert torch.equal(map_levels(boxes, 2, 5), expected)
    assert map_levels([torch.tensor([[0.0, 0, 224, 224]])], 2, 5).item() == 2  # level 4 - k_min


@pytest.mark.parametrize("output_size, image_sizes", [(7, [(128, 96), (100, 128)]), (14, [(800, 800)])])
def test_multiscale_roi_align_matches_torchvision(output_size, image_sizes):
    g = generator(3)
    height = max(s[0] for s in image_sizes)
    width = max(s[1] for s in image_sizes)
    ph, pw = -(-height // 32) * 32, -(-width // 32) * 32  # padded size
    features = OrderedDict(
        (str(i), torch.randn(len(image_sizes), 3, ph // 2 ** (i + 2), pw // 2 ** (i + 2), generator=g))
        for i in range(4)
    )
    features["pool"] = torch.randn(len(image_sizes), 3, 1, 1, generator=g)
    boxes = []
    for h, w in image_sizes:
        xy = torch.rand(30, 2, generator=g) * torch.tensor([w, h]) * 0.8
        boxes.append(torch.cat([xy, xy + torch.rand(30, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 1], dim=1))
    names = ["0", "1", "2", "3"]
    ours = MultiScaleRoIAlign(names, output_size, 2)(features, boxes, image_sizes)
    theirs = TVMultiScaleRoIAlign(names, output_size, 2)(features, boxes, image_sizes)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
