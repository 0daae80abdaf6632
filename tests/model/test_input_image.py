"""Stage 1 against torchvision's GeneralizedRCNNTransform: resize rule, masks, boxes, padding, mapping back."""

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform as TVTransform
from torchvision.models.detection.transform import resize_boxes as tv_resize_boxes

from mrcnn_course.model import torchvision_ops
from mrcnn_course.model.input_image import (
    GeneralizedRCNNTransform,
    batch_images,
    resize,
    resize_boxes,
)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def scene(height: int, width: int, objects: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=g)
    boxes = torch.tensor([[1.0, 2, width / 2, height / 2], [width / 3, height / 4, width - 1, height - 1]])[:objects]
    masks = torch.zeros(objects, height, width, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    return image, {"boxes": boxes, "labels": torch.ones(objects, dtype=torch.int64), "masks": masks}


SIZES = [(480, 640), (333, 517), (800, 800), (37, 1200), (7, 5), (1, 1)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("rule", [(800, 1333), (128, 128), (300, 500)])
def test_resize_matches_torchvision(size, rule):
    image, target = scene(*size)
    ours, our_target = resize(image, *rule, target)
    theirs, their_target = torchvision_ops.resize(image, *rule, target)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert torch.equal(our_target["masks"], their_target["masks"])
    torch.testing.assert_close(our_target["boxes"], their_target["boxes"])
    assert target["boxes"] is not our_target["boxes"], "the caller's target must not be modified"


def test_resize_follows_min_max_rule():
    image, _ = scene(300, 1200)
    resized, _ = resize(image, 800, 1333, None)
    # short side to 800 would make the long side 3200 > 1333: the long side decides
    assert resized.shape[-2:] == (333, 1333)


@pytest.mark.parametrize("sizes", [[(3, 30, 40)], [(3, 33, 65), (3, 64, 31), (3, 1, 1)], [(3, 800, 800)]])
def test_batch_images_matches_torchvision(sizes):
    images = [torch.rand(s) for s in sizes]
    ours, theirs = batch_images(images, 32), torchvision_ops.batch_images(images, 32)
    assert ours.shape == theirs.shape and ours.shape[-1] % 32 == 0 and ours.shape[-2] % 32 == 0
    assert torch.equal(ours, theirs)


def test_resize_boxes_matches_torchvision():
    boxes = torch.rand(10, 4) * 100
    torch.testing.assert_close(
        resize_boxes(boxes, (333, 517), (800, 1242)), tv_resize_boxes(boxes, [333, 517], [800, 1242])
    )
    assert resize_boxes(torch.zeros((0, 4)), (10, 10), (20, 20)).shape == (0, 4)


@pytest.mark.parametrize("training", [False, True])
def test_transform_matches_torchvision(training):
    ours = GeneralizedRCNNTransform((320, 352, 384), 600)
    theirs = TVTransform((320, 352, 384), 600, MEAN, STD)
    ours.train(training), theirs.train(training)
    images_targets = [scene(h, w, seed=i) for i, (h, w) in enumerate([(200, 300), (333, 517), (250, 250)])]
    images, targets = [s[0] for s in images_targets], [s[1] for s in images_targets]
    torch.manual_seed(3)
    batch, our_targets = ours(images, targets)
    torch.manual_seed(3)
    tv_batch, tv_targets = theirs(images, targets)
    assert batch.image_sizes == tv_batch.image_sizes
    torch.testing.assert_close(batch.tensors, tv_batch.tensors, rtol=0, atol=1e-5)
    for a, b in zip(our_targets, tv_targets):
        torch.testing.assert_close(a["boxes"], b["boxes"])
        assert torch.equal(a["masks"], b["masks"])


def test_postprocess_maps_boxes_back():
    transform = GeneralizedRCNNTransform(800, 1333).eval()
    detections = [{"boxes": torch.tensor([[80.0, 160, 400, 640]])}]
    back = transform.postprocess(detections, [(800, 1600)], [(400, 800)])
    torch.testing.assert_close(back[0]["boxes"], torch.tensor([[40.0, 80, 200, 320]]))
