"""roi_geometry: the points and weights drawn for RoI Align are what roi_align reads; RoI Pool's
cells are what torchvision's roi_pool takes the max over."""

import pytest
import torch
import torchvision

from mrcnn_course.model import components
from mrcnn_course.model.roi_align import roi_align
from mrcnn_course.show.roi_geometry import compare_roi_align_pool, roi_pool, roi_pool_cells, sampling_grid

FEATURE = torch.randn(9, 11, generator=torch.Generator().manual_seed(0))  # odd sizes
CASES = {  # name: (box in image pixels, spatial_scale, sampling_ratio, output size)
    "ordinary": ((1.3, 2.2, 8.7, 7.1), 1.0, 2, (3, 4)),
    "scale 1/4, adaptive sampling": ((4.0, 8.0, 36.0, 30.0), 0.25, -1, (2, 2)),
    "last row and column": ((9.5, 7.2, 11.0, 9.0), 1.0, 2, (2, 2)),
    "partly outside": ((-3.0, -2.0, 4.0, 5.0), 1.0, 3, (3, 3)),
    "smaller than a cell": ((2.0, 2.0, 2.3, 2.1), 1.0, 2, (2, 2)),
    "halves to round": ((-2.5, 1.5, 6.5, 4.5), 1.0, 1, (3, 2)),
}


def rois(box):
    return torch.tensor([[0.0, *box]])


@pytest.mark.parametrize("case", list(CASES))
def test_weights_times_cells_give_roi_align(case):
    box, scale, ratio, size = CASES[case]
    grid = sampling_grid(torch.tensor(box), size, ratio, scale, tuple(FEATURE.shape))
    got = (grid.weights * FEATURE[grid.cells[..., 1], grid.cells[..., 0]]).sum(dim=(-1, -2))  # (PH, PW)
    expected = roi_align(FEATURE[None, None], rois(box), size, scale, ratio)[0, 0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_points_lie_in_their_bins_and_interpolate_their_neighbours():
    grid = sampling_grid(torch.tensor((1.3, 2.2, 8.7, 7.1)), (3, 4), 2, 1.0, tuple(FEATURE.shape))
    assert grid.points.shape == (3, 4, 4, 2) and grid.cells.shape == (3, 4, 4, 4, 2)
    x, y = grid.points[..., 0], grid.points[..., 1]
    assert ((x > grid.x_edges[:-1].view(1, 4, 1)) & (x < grid.x_edges[1:].view(1, 4, 1))).all()
    assert ((y > grid.y_edges[:-1].view(3, 1, 1)) & (y < grid.y_edges[1:].view(3, 1, 1))).all()
    # inside the map, the weighted mean of a point's four cells is the point itself (bilinear)
    weights = grid.weights / grid.weights.sum(-1, keepdim=True)
    torch.testing.assert_close((weights[..., None] * grid.cells.float()).sum(-2), grid.points)
    torch.testing.assert_close(grid.weights.sum(dim=(-1, -2)), torch.ones(3, 4))  # an average of the points


@pytest.mark.parametrize("case", list(CASES))
def test_roi_pool_cells_give_torchvision_roi_pool(case):
    box, scale, _, size = CASES[case]
    cells = roi_pool_cells(torch.tensor(box), size, scale, tuple(FEATURE.shape))
    expected = torchvision.ops.roi_pool(FEATURE[None, None], rois(box), size, scale)[0, 0]
    torch.testing.assert_close(roi_pool(FEATURE, cells), expected)


def test_compare_uses_the_active_roi_align():
    box = torch.tensor([1.0, 1.0, 6.0, 5.0])
    readings = compare_roi_align_pool(FEATURE, box, (2, 2), 2)
    torch.testing.assert_close(
        readings.align_output, roi_align(FEATURE[None, None], rois(box.tolist()), 2, 1.0, 2)[0, 0]
    )
    learners = lambda input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False: (  # noqa: E731
        torch.full((len(boxes), input.shape[1], *output_size), 7.0)
    )
    with components.using(roi_align=learners):
        assert (compare_roi_align_pool(FEATURE, box, (2, 2), 2).align_output == 7).all()


def test_compare_wants_one_channel():
    with pytest.raises(ValueError, match=r"Tensor\[H, W\].*feature\[0\]"):
        compare_roi_align_pool(FEATURE[None], torch.tensor([1.0, 1, 5, 5]), (2, 2), 2)
