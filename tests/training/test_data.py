"""data: scenes and their targets, determinism across processes, ShapesDataset, collate."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mrcnn_course.model.box_ops import box_iou
from mrcnn_course.training import data

ALL = data.CLASSES[1:]


def check_target(image: torch.Tensor, target: dict, size: tuple[int, int], classes=data.SHAPES) -> None:
    """Everything a scene's target promises, checked against its own masks."""
    height, width = size
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert torch.equal((image * 255).round() / 255, image)  # exactly k / 255
    count = len(target["labels"])
    assert target["boxes"].shape == (count, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
    assert target["masks"].shape == (count, height, width) and target["masks"].dtype == torch.uint8
    assert set(target["masks"].unique().tolist()) <= {0, 1}
    assert target["image_id"].dtype == torch.int64 and target["image_id"].dim() == 0
    assert torch.equal(target["area"], target["masks"].sum((1, 2)).float())
    assert (target["area"] > 0).all()  # hidden objects are dropped
    assert torch.equal(target["iscrowd"], torch.zeros(count, dtype=torch.int64))
    assert {data.CLASSES[i] for i in target["labels"]} <= set(classes)
    for box, mask in zip(target["boxes"], target["masks"]):
        rows, cols = torch.where(mask > 0)
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert (target["boxes"][:, 2:] <= torch.tensor([width, height])).all()


def scene_hash(seeds: range) -> str:
    digest = hashlib.sha256()
    for seed in seeds:
        image, target = data.make_scene(seed, 48, classes=ALL)
        for tensor in [image, *target.values()]:
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_a_scene_keeps_every_promise_of_the_target_form():
    image, target = data.make_scene(7)
    check_target(image, target, (128, 128))
    assert int(target["image_id"]) == 7
    assert 1 <= len(target["labels"]) <= 4


@pytest.mark.parametrize("size", [32, 33, (37, 61), (170, 200), (64, 16)])
def test_any_size_square_rectangular_or_odd(size):
    expected = (size, size) if isinstance(size, int) else size
    for seed in range(5):
        check_target(*data.make_scene(seed, size), expected)


def test_scenes_are_deterministic_by_seed_and_different_across_seeds():
    first, again = data.make_scene(3, 64, classes=ALL), data.make_scene(3, 64, classes=ALL)
    assert torch.equal(first[0], again[0])
    assert all(torch.equal(first[1][k], again[1][k]) for k in first[1])
    assert not torch.equal(first[0], data.make_scene(4, 64, classes=ALL)[0])
    torch.manual_seed(0)
    np.random.seed(0)
    state = torch.get_rng_state(), np.random.get_state()[1].copy()
    data.make_scene(5)
    assert torch.equal(state[0], torch.get_rng_state())  # the global random states are not touched
    assert np.array_equal(state[1], np.random.get_state()[1])


def test_scenes_are_byte_identical_in_a_fresh_process():
    here = scene_hash(range(10))
    assert here == scene_hash(range(10))
    code = "from tests.training.test_data import scene_hash; print(scene_hash(range(10)))"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == here


def test_many_objects_hide_some_which_are_dropped_never_passed_on():
    dropped = 0
    for seed in range(5):
        image, target = data.make_scene(seed, 48, num_objects=(20, 20), classes=ALL)
        check_target(image, target, (48, 48), ALL)
        dropped += 20 - len(target["labels"])
    assert dropped > 0


def test_target_from_masks_drops_an_object_with_nothing_visible():
    masks = np.zeros((3, 8, 10), dtype=bool)
    masks[0, 2:4, 3:7] = True
    masks[2, 5, 9] = True  # one pixel: a 1 x 1 box
    target = data.target_from_masks(masks, np.array([1, 2, 3]), image_id=11)
    assert target["labels"].tolist() == [1, 3]
    assert target["boxes"].tolist() == [[3, 2, 7, 4], [9, 5, 10, 6]]
    assert target["area"].tolist() == [8, 1]
    assert target["masks"].shape == (2, 8, 10)
    empty = data.target_from_masks(np.zeros((1, 8, 10), dtype=bool), np.array([1]), image_id=0)
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 10)


def test_no_objects_gives_an_empty_target_of_the_right_shapes():
    image, target = data.make_scene(1, (20, 30), num_objects=(0, 0))
    check_target(image, target, (20, 30))
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 20, 30)


def test_dogs_and_cats():
    labels = set()
    for seed in range(6):
        image, target = data.make_scene(seed, 96, classes=("dog", "cat"))
        check_target(image, target, (96, 96), ("dog", "cat"))
        labels |= set(target["labels"].tolist())
    assert labels == {4, 5}


def test_the_dog_and_cat_demo_scene():
    image, target = data.dog_and_cat_scene()
    check_target(image, target, (256, 256), ALL)
    assert target["labels"].tolist() == [4, 5]  # the dog, then the cat in front of it
    assert 0 < box_iou(target["boxes"][:1], target["boxes"][1:]).item() < 0.2  # slightly overlapping
    assert (target["area"] > 0.07 * 256 * 256).all()  # both large and mostly visible
    again, small = data.dog_and_cat_scene(), data.dog_and_cat_scene(128)
    assert torch.equal(image, again[0])
    assert small[0].shape == (3, 128, 128) and small[1]["labels"].tolist() == [4, 5]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(image_size=8), "image_size"),
        (dict(image_size=(64, 64, 3)), "image_size"),
        (dict(image_size=64.0), "image_size"),
        (dict(classes=("horse",)), "names from"),
        (dict(classes="dog"), "names"),
        (dict(classes=()), "names"),
        (dict(num_objects=(3, 1)), "num_objects"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_scene_options_say_what_to_change(arguments, message):
    with pytest.raises(ValueError, match=message):
        data.make_scene(**{"seed": 0, **arguments})


def test_shapes_dataset_items_are_scenes_of_derived_seeds():
    dataset = data.ShapesDataset(5, 40, seed=3, classes=ALL, num_objects=(2, 3))
    assert len(dataset) == 5
    image, target = dataset[4]
    expected_image, expected_target = data.make_scene(3 * 2**32 + 4, 40, (2, 3), ALL)
    assert torch.equal(image, expected_image) and torch.equal(target["masks"], expected_target["masks"])
    assert int(target["image_id"]) == 3 * 2**32 + 4
    other = data.ShapesDataset(5, 40, seed=4, classes=ALL)
    assert {int(dataset[i][1]["image_id"]) for i in range(5)}.isdisjoint(int(other[i][1]["image_id"]) for i in range(5))
    with pytest.raises(IndexError):
        dataset[5]
    huge = data.ShapesDataset(10**9, seed=2**31 - 1)  # lazy: nothing is drawn until asked for
    assert len(huge) == 10**9 and int(huge[10**9 - 1][1]["image_id"]) < 2**63
    for bad in (dict(seed=2**31), dict(seed=-1), dict(classes=("horse",)), dict(image_size=4)):
        with pytest.raises(ValueError):
            data.ShapesDataset(3, **bad)


def test_collate_for_a_dataloader():
    loader = DataLoader(data.ShapesDataset(5, 32), batch_size=2, collate_fn=data.collate)
    batches = list(loader)
    assert [len(images) for images, _ in batches] == [2, 2, 1]
    images, targets = batches[0]
    assert images[0].shape == (3, 32, 32) and isinstance(targets[1], dict)
    assert int(targets[1]["image_id"]) == 1
