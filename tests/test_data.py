"""data: scenes and their targets, determinism across processes, ShapesDataset, to_image_tensor, COCO."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
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
    code = "from tests.test_data import scene_hash; print(scene_hash(range(10)))"
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


# ----- to_image_tensor -----
PIXELS = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)  # (H, W, 3)
EXPECTED = torch.from_numpy(PIXELS).permute(2, 0, 1).float() / 255  # (3, H, W)


IN_MEMORY = {
    "PIL image": Image.fromarray(PIXELS),
    "numpy (H, W, 3)": PIXELS,
    "uint8 tensor (H, W, 3)": torch.from_numpy(PIXELS),
    "uint8 tensor (3, H, W)": torch.from_numpy(PIXELS).permute(2, 0, 1),
    "float tensor": EXPECTED.double(),
}


@pytest.mark.parametrize("kind", list(IN_MEMORY))
def test_to_image_tensor_takes_every_usual_form(kind):
    image = data.to_image_tensor(IN_MEMORY[kind])
    assert image.dtype == torch.float32
    assert torch.equal(image, EXPECTED)


def test_to_image_tensor_reads_files(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "a.png")
    assert torch.equal(data.to_image_tensor(tmp_path / "a.png"), EXPECTED)
    Image.fromarray(PIXELS).save(tmp_path / "a.jpg", quality=95)
    decoded = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))  # JPEG is lossy: compare with PIL's
    assert torch.equal(
        data.to_image_tensor(str(tmp_path / "a.jpg")), torch.from_numpy(decoded).permute(2, 0, 1).float() / 255
    )


def test_to_image_tensor_converts_grayscale_and_rgba(tmp_path):
    gray = Image.fromarray(PIXELS[..., 0])  # mode L
    for image in (data.to_image_tensor(gray), data.to_image_tensor(PIXELS[..., 0])):
        assert image.shape == (3, 6, 9) and torch.equal(image[0], image[2])
        assert torch.equal(image[0], EXPECTED[0])
    rgba = np.concatenate([PIXELS, np.full((6, 9, 1), 128, dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    for image in (
        data.to_image_tensor(tmp_path / "rgba.png"),
        data.to_image_tensor(rgba),
        data.to_image_tensor(torch.from_numpy(rgba)),
    ):
        assert torch.equal(image, EXPECTED)  # alpha dropped


def test_to_image_tensor_explains_bad_input(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"cannot read .*corrupt.png as an image"):
        data.to_image_tensor(corrupt)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot read"):
        data.to_image_tensor(truncated)
    with pytest.raises(FileNotFoundError, match="no image file"):
        data.to_image_tensor(tmp_path / "missing.png")
    cases = [
        (PIXELS.astype(np.float64), "must be uint8"),
        (np.zeros((6, 9, 5), np.uint8), r"\(H, W, 3\)"),
        (torch.rand(3, 4, 5) * 2, r"\[0, 1\].*divide"),
        (torch.full((3, 4, 5), float("nan")), r"\[0, 1\]"),
        (torch.zeros(2, 4, 5), "shape"),
        (torch.zeros(4, 5, 3, dtype=torch.int32), "uint8 or float"),
        (torch.zeros(0, 3), "shape"),
        ([[1, 2, 3]], "cannot make an image of a list"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            data.to_image_tensor(bad)


# ----- COCO -----
def test_export_and_read_back_is_exact(tmp_path):
    dataset = data.ShapesDataset(6, (40, 56), seed=2, classes=ALL, num_objects=(0, 2))
    path = data.export_coco(dataset, tmp_path / "coco")
    assert path == tmp_path / "coco" / "annotations.json"
    content = json.loads(path.read_text())
    assert [c["name"] for c in content["categories"]] == list(ALL)
    assert [c["id"] for c in content["categories"]] == [1, 2, 3, 4, 5]
    first = content["annotations"][0]
    x1, y1, x2, y2 = dataset[int(first["image_id"]) - 2 * 2**32][1]["boxes"][0].tolist()
    assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1]  # COCO boxes are x, y, width, height
    assert isinstance(first["segmentation"]["counts"], str)
    folder = data.CocoFolder(tmp_path / "coco")
    assert len(folder) == 6 and folder.class_names == list(data.CLASSES)
    empty = 0
    for i in range(6):
        (image, target), (expected_image, expected) = folder[i], dataset[i]
        assert torch.equal(image, expected_image)  # PNG is lossless and scenes are exactly k / 255
        assert target.keys() == expected.keys()
        for key in expected:
            assert target[key].dtype == expected[key].dtype, key
            assert torch.equal(target[key], expected[key]), key
        empty += len(target["labels"]) == 0
    assert empty > 0  # the round trip covered an image without objects


def write_json(path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_coco_folder_reads_polygons_and_drops_empty_boxes(tmp_path):
    (tmp_path / "pictures").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(tmp_path / "pictures" / "x.jpg")
    annotations = [
        {
            "id": 1,
            "image_id": 9,
            "category_id": 18,
            "bbox": [4, 2, 10, 6],
            "area": 60,
            "iscrowd": 0,
            "segmentation": [[4, 2, 14, 2, 14, 8, 4, 8]],
        },  # a 10 x 6 rectangle as a polygon
        {
            "id": 2,
            "image_id": 9,
            "category_id": 1,
            "bbox": [5, 5, 0, 3],
            "area": 0,
            "iscrowd": 0,
            "segmentation": [[5, 5, 5, 8, 5, 8]],
        },  # no width: dropped
    ]
    write_json(
        tmp_path / "ann" / "instances.json",
        {
            "images": [{"id": 9, "file_name": "x.jpg", "height": 20, "width": 30}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        },
    )
    folder = data.CocoFolder(tmp_path, "ann/instances.json", images="pictures")
    image, target = folder[0]
    assert image.shape == (3, 20, 30)
    assert target["labels"].tolist() == [18] and folder.class_names[18] == "dog"
    assert folder.class_names[2] == "class 2"  # a gap in the category ids
    assert target["boxes"].tolist() == [[4, 2, 14, 8]]
    assert target["masks"].shape == (1, 20, 30)
    assert target["masks"][0, 2:8, 4:14].all() and target["masks"].sum() == 60
    assert int(target["image_id"]) == 9


def test_coco_folder_explains_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no COCO annotations"):
        data.CocoFolder(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        data.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", {"images": [], "info": {}})
    with pytest.raises(ValueError, match=r"not COCO .*\['annotations', 'categories'\]"):
        data.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", [1, 2])
    with pytest.raises(ValueError, match="not COCO"):
        data.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", {"images": [{"file_name": "a.png"}], "annotations": [], "categories": []})
    with pytest.raises(ValueError, match="lacks 'id'"):
        data.CocoFolder(tmp_path)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    write_json(
        tmp_path / "annotations.json",
        {"images": [{"id": 1, "file_name": "a.png", "height": 9, "width": 8}], "annotations": [], "categories": []},
    )
    with pytest.raises(ValueError, match="does not belong"):
        data.CocoFolder(tmp_path)[0]


def test_export_refuses_duplicate_image_ids(tmp_path):
    scene = data.make_scene(0, 32)
    with pytest.raises(ValueError, match="unique"):
        data.export_coco([scene, scene], tmp_path)
