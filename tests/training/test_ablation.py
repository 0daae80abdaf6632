"""The ablation lab's changes are really applied while their block runs, and undone after it."""

import pytest
import torch
import torch.nn.functional as F

from mrcnn_course.model import components
from mrcnn_course.model.box_head import select_training_samples
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.show import roi_geometry
from mrcnn_course.training import ablation, data
from mrcnn_course.training.recipe import Recipe


def small_model():
    torch.manual_seed(0)
    return maskrcnn_small(num_classes=len(data.CLASSES))


def scene(seed=3):
    return data.make_scene(seed=seed, image_size=128, classes=data.CLASSES[1:])


def test_every_change_has_a_title_and_what_the_paper_found():
    assert list(ablation.CHANGES) == ["default", "roi_pool", "softmax_masks", "no_gt_proposals", "no_low_quality"]
    assert all(c.title and c.paper for c in ablation.CHANGES.values())
    with pytest.raises(ValueError, match="the lab's changes are default, roi_pool"):
        ablation.check_change("roi_poool")


def test_roi_pool_is_the_course_s_own_roi_pool_geometry_on_every_channel():
    feature = torch.randn(1, 3, 20, 24)
    box = torch.tensor([3.3, 2.6, 17.9, 15.2])
    pooled = ablation.roi_pool(feature, [box[None]], 7, spatial_scale=0.5, sampling_ratio=2, aligned=True)
    cells = roi_geometry.roi_pool_cells(box, (7, 7), 0.5, (20, 24))
    for channel in range(3):
        assert torch.equal(pooled[0, channel], roi_geometry.roi_pool(feature[0, channel], cells))


def test_roi_pool_replaces_roi_align_in_the_model_only_inside_the_block():
    model = small_model().eval()
    image, _ = scene()
    with ablation.CHANGES["roi_pool"].applied(model), components.recording() as ran:
        model([image])
    assert ran["roi_align"].endswith("ablation.roi_pool")
    with components.recording() as ran:
        model([image])
    assert ran["roi_align"] == components.OWN


def test_softmax_masks_train_on_a_cross_entropy_and_detect_with_the_softmax_probability():
    model = small_model()
    logits = torch.randn(2, len(data.CLASSES), 28, 28)
    gt_masks = [torch.zeros(1, 64, 64, dtype=torch.uint8)]
    gt_masks[0][0, 10:40, 12:50] = 1
    boxes = [torch.tensor([[8.0, 8.0, 48.0, 44.0], [0.0, 0.0, 60.0, 60.0]])]
    labels, matched = [torch.tensor([3])], [torch.tensor([0, 0])]
    predictor = model.roi_heads.mask_predictor.eval()
    features = torch.randn(2, model.roi_heads.mask_head(torch.zeros(1, 64, 14, 14)).shape[1], 14, 14)
    raw = predictor(features)  # (2, C, 28, 28) logits, before the change
    sigmoid_loss = components.maskrcnn_loss(logits, boxes, gt_masks, labels, matched)
    with ablation.CHANGES["softmax_masks"].applied(model):
        loss = components.maskrcnn_loss(logits, boxes, gt_masks, labels, matched)
        targets = components.project_masks_on_boxes(gt_masks[0], boxes[0], matched[0], 28)
        assert torch.allclose(loss, F.cross_entropy(logits, (targets >= 0.5).long() * 3))
        assert torch.allclose(predictor(features).sigmoid(), raw.softmax(dim=1), atol=1e-5)  # detections
        assert torch.equal(predictor.train()(features), raw)  # training: the raw logits, for the loss
    assert torch.equal(predictor.eval()(features), raw)  # the hook is gone after the block
    assert torch.equal(components.maskrcnn_loss(logits, boxes, gt_masks, labels, matched), sigmoid_loss)
    assert not torch.allclose(loss, sigmoid_loss)


def test_no_gt_proposals_leaves_the_ground_truth_out_of_the_sampled_rois():
    model = small_model()
    _, target = scene()
    far = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [100.0, 100.0, 127.0, 127.0]])]  # overlap no object
    heads = model.roi_heads
    args = (far, [target], heads.proposal_matcher, heads.fg_bg_sampler, heads.box_coder)
    torch.manual_seed(0)
    with_truth = components.select_training_samples(*args)[0][0]
    assert any((with_truth == box).all(dim=1).any() for box in target["boxes"])
    with ablation.CHANGES["no_gt_proposals"].applied(model):
        torch.manual_seed(0)
        without = components.select_training_samples(*args)[0][0]
    assert not any((without == box).all(dim=1).any() for box in target["boxes"])
    assert torch.equal(select_training_samples(*args, add_ground_truth=False)[2][0], torch.zeros(2, dtype=torch.int64))


def test_no_low_quality_switches_the_rpn_matcher_and_puts_it_back():
    model = small_model()
    iou = torch.tensor([[0.5, 0.2, 0.1]])  # the object's best anchor overlaps it by 0.5 < 0.7
    matcher = model.rpn.proposal_matcher
    assert matcher(iou).tolist() == [0, -1, -1]  # low-quality match: the best anchor is positive
    with ablation.CHANGES["no_low_quality"].applied(model):
        assert matcher(iou).tolist() == [-2, -1, -1]  # no positive anchor for this object
    assert matcher.allow_low_quality_matches is True
    assert model.roi_heads.proposal_matcher.allow_low_quality_matches is False  # the box head never had them


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ablation.CHANGES))
def test_a_short_run_trains_and_measures_each_change(name):
    recipe = Recipe(epochs=1, images_per_epoch=16, val_images=4, shown_images=1)
    result = ablation.train_with_change(name, recipe, held_out_images=4)
    assert result["change"] == name and result["steps"] == 2
    assert all(0.0 <= result[k] <= 1.0 for k in ("box_map", "mask_map50", "recall", "precision"))
    assert all(components.active(n) == components.OWN for n in components.NAMES)  # every one back to its own


def test_the_shipped_table_has_every_change_and_says_how_it_was_made():
    shipped = ablation.shipped_results()
    assert [row["change"] for row in shipped["rows"] if row["seed"] == 0] == list(ablation.CHANGES)
    assert [row["change"] for row in shipped["rows"] if row["seed"] == 1] == ["default"]  # the noise floor
    assert all(c.startswith("python benchmarks/ablation.py") for c in shipped["commands"]) and "load_average" in shipped
    assert Recipe(**shipped["recipe"])  # a recipe the course can run again
