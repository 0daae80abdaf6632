"""The assembled model against torchvision's maskrcnn_resnet50_fpn with the same weights.

Our backbone and mask head compute in channels-last memory order (oneDNN's CPU layout), which rounds
differently from the default order (by ~1e-5 of a feature map's scale, up to 4e-3 px in a box through the
heads), so torchvision's models here are converted to channels-last too: the same kernels then run, and
with torchvision's ops selected the outputs are the same, bit for bit; with the package's own ops (the default),
at least 99% of torchvision's detections have a match of the same label at box IoU >= 0.99 and the
matched masks agree on >= 99.9% of pixels. Both on a batch of several sizes and one image at a time.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from mrcnn_course.model import components
from mrcnn_course.model.maskrcnn import maskrcnn_resnet50_fpn, maskrcnn_small
from mrcnn_course.model.torchvision_ops import torchvision_maskrcnn_small

SLOW = pytest.mark.slow  # R-50-FPN models, several images: tens of seconds on 2 cores

# Smaller than the default 800 px so the suite stays fast; both models get the same keywords.
KWARGS = dict(min_size=320, max_size=512, box_score_thresh=0.0)


def images(seed: int = 0, sizes=((300, 400), (400, 260), (333, 517))) -> list[torch.Tensor]:
    """Smooth random images (the random network sees some structure), by default of several sizes and aspect ratios."""
    g = torch.Generator().manual_seed(seed)
    return [
        F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")[0] for h, w in sizes
    ]


def box_targets(imgs: list[torch.Tensor], boxes_per_image: list, dtype=torch.float32) -> list[dict]:
    """A target per image: the boxes (x1, y1, x2, y2), labels 1, 2, ..., and each box filled as its mask."""
    targets = []
    for img, boxes in zip(imgs, boxes_per_image):
        boxes = torch.tensor(boxes, dtype=dtype)
        masks = torch.zeros(len(boxes), *img.shape[-2:], dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.arange(1, len(boxes) + 1), "masks": masks})
    return targets


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **KWARGS).eval()
    ours = maskrcnn_resnet50_fpn(**KWARGS).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs.to(memory_format=torch.channels_last)  # the layout ours computes in (module docstring)


@pytest.fixture(scope="module")
def reference(models):
    _, theirs = models
    with torch.no_grad():
        return {"batch": theirs(images()), "single": [theirs([img])[0] for img in images()]}


def run(model, mode: str, ops: str):
    with (
        torch.no_grad(),
        components.using(**{n: ops for n in components.NAMES if ops == "own" or components.COMPONENTS[n].torchvision}),
    ):
        if mode == "batch":
            return model(images())
        return [model([img])[0] for img in images()]


@SLOW
def test_state_dict_keys_are_torchvisions(models):
    ours, theirs = models
    assert list(ours.state_dict()) == list(theirs.state_dict())


@SLOW
@pytest.mark.parametrize("mode", ["batch", "single"])
def test_same_outputs_with_torchvision_ops(models, reference, mode):
    got = run(models[0], mode, "torchvision")
    for ours, theirs in zip(got, reference[mode]):
        assert len(theirs["boxes"]) > 50, "the random network should still detect (box_score_thresh=0.0)"
        assert torch.equal(ours["labels"], theirs["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-4)


def match_detections(reference: dict, got: dict) -> tuple[float, float]:
    """Share of reference detections with a same-label match at IoU >= 0.99; pixel agreement of matched masks."""
    iou = torchvision.ops.box_iou(reference["boxes"], got["boxes"])
    iou[reference["labels"][:, None] != got["labels"][None, :]] = 0
    best_iou, best = iou.max(dim=1) if len(got["boxes"]) else (torch.zeros(len(iou)), None)
    matched = best_iou >= 0.99
    if not matched.any():
        return 0.0, 0.0
    ref_masks = reference["masks"][matched] > 0.5
    got_masks = got["masks"][best[matched]] > 0.5
    return matched.float().mean().item(), (ref_masks == got_masks).float().mean().item()


@SLOW
@pytest.mark.parametrize("mode", ["batch", "single"])
def test_matching_detections_with_own_ops(models, reference, mode):
    got = run(models[0], mode, "own")
    for ours, theirs in zip(got, reference[mode]):
        matched, mask_agreement = match_detections(theirs, ours)
        assert matched >= 0.99, f"only {matched:.1%} of torchvision's detections matched"
        assert mask_agreement >= 0.999, f"masks agree on {mask_agreement:.3%} of pixels"


@SLOW
def test_coco_checkpoint_layout_loads_strictly():
    """torchvision's COCO weights use FrozenBatchNorm2d (no num_batches_tracked): they load as they are."""
    torch.manual_seed(1)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    coco_like = TVMaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=91, **KWARGS).eval()
    state = coco_like.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in state)
    ours = maskrcnn_resnet50_fpn(**KWARGS).eval()
    ours.load_state_dict(state, strict=True)
    coco_like = coco_like.to(memory_format=torch.channels_last)  # ours's layout (module docstring)
    image = images()[:1]
    with torch.no_grad(), components.using(nms="torchvision", roi_align="torchvision"):
        got, expected = ours(image)[0], coco_like(image)[0]
    assert torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=0, atol=1e-3)


@SLOW
def test_training_losses_equal_torchvisions_with_the_same_seed(models):
    ours, theirs = models
    imgs = images()[:2]
    targets = box_targets(imgs, [[[10.0, 20, 100, 150], [50, 60, 200, 220]], [[0.0, 0, 40, 30]]])
    ours.train(), theirs.train()
    try:
        torch.manual_seed(5)
        expected = theirs(imgs, targets)
        torch.manual_seed(5)
        got = ours(imgs, targets)
    finally:
        ours.eval(), theirs.eval()
    assert got.keys() == expected.keys() and len(got) == 5
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5)


@SLOW
def test_model_calls_through_components(models):
    calls = []

    def counting_nms(boxes, scores, iou_threshold):
        calls.append(len(boxes))
        return torchvision.ops.nms(boxes, scores, iou_threshold)

    with torch.no_grad(), components.using(nms=counting_nms):
        models[0](images()[:1])
    assert calls, "the model must call NMS through mrcnn_course.model.components"


@SLOW
def test_small_model_trains_and_predicts():
    model = maskrcnn_small(num_classes=4)
    image = torch.rand(3, 128, 128)
    mask = torch.zeros(1, 128, 128, dtype=torch.uint8)
    mask[0, 20:60, 30:90] = 1
    target = {"boxes": torch.tensor([[30.0, 20, 90, 60]]), "labels": torch.tensor([2]), "masks": mask}
    losses = model([image, image], [target, target])
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([image])[0]
    assert out["masks"].shape[1:] == (1, 128, 128) and len(out["boxes"]) == len(out["labels"]) == len(out["scores"])


@SLOW
def test_bad_input_is_explained_before_anything_runs(models):
    with pytest.raises(ValueError, match="channels last"):
        models[0]([torch.rand(64, 64, 3)])


@SLOW
def test_torchvision_is_not_imported_unless_asked_for():
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from mrcnn_course.model.maskrcnn import maskrcnn_small\n"
        "m = maskrcnn_small().eval()\n"
        "m([torch.rand(3, 64, 64)]); m.train()\n"
        "mask = torch.zeros(1, 64, 64, dtype=torch.uint8); mask[0, 5:30, 5:30] = 1\n"
        "m([torch.rand(3, 64, 64)], [{'boxes': torch.tensor([[5., 5, 30, 30]]), 'labels': torch.tensor([1]), "
        "'masks': mask}])\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_in_float64_the_model_equals_torchvisions_float64_model():
    """model.double() runs in float64 (float32 images are converted to it) and gives torchvision's detections
    and losses, with the package's own components, to float64's precision (not float32's)."""
    torch.manual_seed(0)
    theirs = torchvision_maskrcnn_small(num_classes=4).double().eval()
    ours = maskrcnn_small(num_classes=4).double().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    imgs = images(sizes=((128, 128), (96, 160)))  # float32: the model converts them to its weights' dtype
    targets = box_targets(imgs, [[[10.0, 20, 100, 110], [50, 60, 120, 90]], [[0.0, 0, 40, 30]]], torch.float64)
    with torch.no_grad():
        got, expected = ours(imgs), theirs([img.double() for img in imgs])
    for a, b in zip(got, expected):
        assert len(b["boxes"]) > 0 and torch.equal(a["labels"], b["labels"])
        for key in ("boxes", "scores", "masks"):
            assert a[key].dtype == torch.float64
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9)
    ours.train(), theirs.train()
    torch.manual_seed(5)
    got_losses = ours(imgs, targets)
    torch.manual_seed(5)
    expected_losses = theirs([img.double() for img in imgs], targets)
    assert got_losses.keys() == expected_losses.keys() and len(got_losses) == 5
    for key, loss in got_losses.items():
        assert loss.dtype == torch.float64, key
        if key == "loss_objectness":  # torchvision's RPN makes its labels float32, so this loss comes back float32
            torch.testing.assert_close(loss, expected_losses[key].double(), rtol=1e-6, atol=0)
        else:
            torch.testing.assert_close(loss, expected_losses[key], rtol=1e-10, atol=0)
