"""coco: a synthetic dataset exported and read back exactly, polygons, and what is wrong with a folder.
Also bad input: a broken annotation, duplicate ids and unpredictable categories are named when the folder opens.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_course.__main__ import main
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import coco, data, evaluation

ALL = data.CLASSES[1:]


def test_export_and_read_back_is_exact(tmp_path):
    dataset = data.ShapesDataset(6, (40, 56), seed=2, classes=ALL, num_objects=(0, 2))
    path = coco.export_coco(dataset, tmp_path / "coco")
    assert path == tmp_path / "coco" / "annotations.json"
    content = json.loads(path.read_text())
    assert [c["name"] for c in content["categories"]] == list(ALL)
    assert [c["id"] for c in content["categories"]] == [1, 2, 3, 4, 5]
    first = content["annotations"][0]
    x1, y1, x2, y2 = dataset[int(first["image_id"]) - 2 * 2**32][1]["boxes"][0].tolist()
    assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1]  # COCO boxes are x, y, width, height
    assert isinstance(first["segmentation"]["counts"], str)
    folder = coco.CocoFolder(tmp_path / "coco")
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
    folder = coco.CocoFolder(tmp_path, "ann/instances.json", images="pictures")
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
        coco.CocoFolder(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        coco.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", {"images": [], "info": {}})
    with pytest.raises(ValueError, match=r"not COCO .*\['annotations', 'categories'\]"):
        coco.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", [1, 2])
    with pytest.raises(ValueError, match="not COCO"):
        coco.CocoFolder(tmp_path)
    write_json(tmp_path / "annotations.json", {"images": [{"file_name": "a.png"}], "annotations": [], "categories": []})
    with pytest.raises(ValueError, match="lacks 'id'"):
        coco.CocoFolder(tmp_path)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    write_json(
        tmp_path / "annotations.json",
        {"images": [{"id": 1, "file_name": "a.png", "height": 9, "width": 8}], "annotations": [], "categories": []},
    )
    with pytest.raises(ValueError, match="does not belong"):
        coco.CocoFolder(tmp_path)[0]


def test_export_refuses_duplicate_image_ids(tmp_path):
    scene = data.make_scene(0, 32)
    with pytest.raises(ValueError, match="unique"):
        coco.export_coco([scene, scene], tmp_path)


def coco_folder(folder: Path, annotations: list[dict], images=None, categories=None) -> Path:
    """A COCO folder with one 20 x 30 black image (id 9, x.png) unless `images` says otherwise."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(folder / "images" / "x.png")
    content = {
        "images": images or [{"id": 9, "file_name": "x.png", "height": 20, "width": 30}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
    }
    (folder / "annotations.json").write_text(json.dumps(content))
    return folder


def annotation(**changes) -> dict:
    good = {
        "id": 5,
        "image_id": 9,
        "category_id": 1,
        "bbox": [4, 2, 10, 6],
        "area": 60,
        "iscrowd": 0,
        "segmentation": [[4, 2, 14, 2, 14, 8, 4, 8]],
    }
    return {k: v for k, v in {**good, **changes}.items() if v is not None}


def rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a uint8 mask (H, W), as pycocotools writes it."""
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


RECTANGLE = np.zeros((20, 30), dtype=np.uint8)
RECTANGLE[2:8, 4:14] = 1  # the 10 x 6 rectangle of annotation()'s polygon
FIX_SEGMENTATION = "; fix the segmentation, or drop the annotation"
# (annotations, what the message says after "<file>: "): each names the entry and the fix
BAD_ANNOTATIONS = {
    "not an object": (
        [[5, 9, 1]],
        "annotation entry #0 is a list ([5, 9, 1]), not a JSON object: each annotation is a JSON object with id, "
        "image_id, category_id, bbox and segmentation",
    ),
    "no id": ([annotation(id=None)], "annotation entry #0 has id None: each annotation needs an integer id of its own"),
    "text id": ([annotation(id="5")], "annotation entry #0 has id '5': each annotation needs an integer id"),
    "duplicate id": (
        [annotation(), annotation(category_id=2)],
        "annotation id 5 is given to entries #0 and #1: each annotation needs an id of its own",
    ),
    "unknown image": (
        [annotation(image_id=3)],
        "annotation 5 refers to no image of the json (image_id 3): give the id of one of its images, or drop "
        "the annotation",
    ),
    "text image id": ([annotation(image_id="9")], "annotation 5 refers to no image of the json (image_id '9')"),
    "text category": (
        [annotation(category_id="1")],
        "annotation 5 (image x.png) has category_id '1', a str: category ids are integers (write 3, not \"3\")",
    ),
    "background category": (
        [annotation(category_id=0)],
        "annotation 5 (image x.png) has category_id 0: category ids start at 1 (0 is the background)",
    ),
    "unknown category": (
        [annotation(category_id=7)],
        "annotation 5 (image x.png) has category_id 7, which no category of the json has (ids [1, 2]): add the "
        "category to the json's categories, or fix the id",
    ),
    "no bbox": (
        [annotation(bbox=None)],
        "annotation 5 (image x.png) has bbox None: each annotation needs bbox [x, y, width, height] (numbers, "
        "width and height at least 0)",
    ),
    "three numbers": ([annotation(bbox=[4, 2, 10])], "annotation 5 (image x.png) has bbox [4, 2, 10]: each"),
    "a number of 400 digits": ([annotation(bbox=[4, 2, 10**400, 6])], "has bbox [4, 2, 1000000000"),
    "NaN in bbox": ([annotation(bbox=[4, 2, float("nan"), 6])], "annotation 5 (image x.png) has bbox [4, 2, nan, 6]"),
    "negative width": ([annotation(bbox=[4, 2, -10, 6])], "has bbox [4, 2, -10, 6]: each annotation needs bbox"),
    "no segmentation": (
        [annotation(segmentation=[])],
        "annotation 5 (image x.png): its segmentation is []: Mask R-CNN needs a mask, as polygons or as an RLE"
        + FIX_SEGMENTATION,
    ),
    "two points": (
        [annotation(segmentation=[[4, 2, 14, 2]])],
        "annotation 5 (image x.png): a polygon of its segmentation has 4 numbers: a polygon needs x, y pairs of "
        "3 points or more" + FIX_SEGMENTATION,
    ),
    "odd numbers": (
        [annotation(segmentation=[[4, 2, 14, 2, 14, 8, 4]])],
        "annotation 5 (image x.png): a polygon of its segmentation has 7 numbers",
    ),
    "infinity in a polygon": (
        [annotation(segmentation=[[4, 2, 14, 2, float("inf"), 8]])],
        "annotation 5 (image x.png): a polygon of its segmentation is not a list of numbers [x1, y1, x2, y2, ...]"
        + FIX_SEGMENTATION,
    ),
    "RLE without size": (
        [annotation(segmentation={"counts": "abc"})],
        "annotation 5 (image x.png): its RLE segmentation lacks 'size' or 'counts' (has ['counts'])",
    ),
    "RLE of another size": (
        [annotation(segmentation=rle(RECTANGLE[:10]))],
        "annotation 5 (image x.png): its RLE has size [10, 30] but its image is 20 x 30: an RLE's size is "
        "[height, width] of its image" + FIX_SEGMENTATION,
    ),
    "RLE counts a number": (
        [annotation(segmentation={"size": [20, 30], "counts": 600})],
        "annotation 5 (image x.png): its RLE counts 600 are not run lengths: counts are a list of integers "
        "from 0 or COCO's compressed text (pycocotools' mask.encode writes it)" + FIX_SEGMENTATION,
    ),
    "RLE counts negative": (
        [annotation(segmentation={"size": [20, 30], "counts": [700, -100]})],
        "annotation 5 (image x.png): its RLE counts [700, -100] are not run lengths",
    ),
    "RLE text not COCO's": (
        [annotation(segmentation={"size": [20, 30], "counts": "0~~"})],
        "annotation 5 (image x.png): its RLE counts '0~~' are not run lengths",
    ),
    "RLE counts too long": (
        [annotation(segmentation={"size": [20, 30], "counts": [500, 200]})],
        "annotation 5 (image x.png): its RLE counts cover 700 pixels but its image has 20 x 30 = 600: the runs "
        "must cover every pixel once (was the RLE made for another image size?)" + FIX_SEGMENTATION,
    ),
    "crowd 2": (
        [annotation(iscrowd=2)],
        "annotation 5 (image x.png) has iscrowd 2: iscrowd is 0 (an object) or 1 (a crowd region)",
    ),
    "crowd true": ([annotation(iscrowd=True)], "annotation 5 (image x.png) has iscrowd True: iscrowd is 0"),
    "negative area": (
        [annotation(area=-60)],
        "annotation 5 (image x.png) has area -60: the area is the object's size in pixels, a number from 0 (or "
        "leave it out: the mask's pixels are counted)",
    ),
    "text area": ([annotation(area="60")], "annotation 5 (image x.png) has area '60': the area is"),
}


def refusal(folder: Path) -> str:
    """The message CocoFolder(folder) refuses with; it starts with the json's path."""
    with pytest.raises(ValueError) as error:
        coco.CocoFolder(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'annotations.json'}: "), message
    return message


@pytest.mark.parametrize("bad, message", BAD_ANNOTATIONS.values(), ids=BAD_ANNOTATIONS.keys())
def test_a_broken_coco_annotation_is_named_when_the_folder_opens(tmp_path, bad, message):
    coco_folder(tmp_path, bad)
    assert message in refusal(tmp_path)


IMAGE = {"id": 9, "file_name": "x.png", "height": 20, "width": 30}
BAD_IMAGES = {
    "not an object": (
        [[9, "x.png"]],
        "image entry 0 is a list ([9, 'x.png']), not a JSON object: each image is a JSON object with id, "
        "file_name, height and width",
    ),
    "no height": (  # pycocotools needs it to draw a polygon (it raised KeyError: 'height')
        [{"id": 9, "file_name": "x.png", "width": 30}],
        "image entry 0 lacks 'height': each image needs an id, its file_name, and its height and width in pixels",
    ),
    "no id": ([{"file_name": "x.png"}], "image entry 0 lacks 'id', 'height', 'width': each image needs"),
    "64-bit id": ({**IMAGE, "id": 2**63}, "image entry 0 (x.png) has id 9223372036854775808: image ids are"),
    "text id": ({**IMAGE, "id": "9"}, "image entry 0 (x.png) has id '9': image ids are integers (write 9, not \"9\")"),
    "text height": (
        {**IMAGE, "height": "20"},
        "image entry 0 (x.png) has height '20' and width 30: give the image's size in pixels, integers from 1",
    ),
    "no width": ({**IMAGE, "width": 0}, "image entry 0 (x.png) has height 20 and width 0: give the image's size"),
    "path up": (
        {**IMAGE, "file_name": "../x.png"},
        "image entry 0 has file_name '../x.png': a file name is a path inside the images folder (like "
        "'000139.jpg'), without '..' and not absolute, so that images are read from the dataset only",
    ),
    "absolute path": ({**IMAGE, "file_name": "/etc/passwd"}, "image entry 0 has file_name '/etc/passwd': a file name"),
    "null character": ({**IMAGE, "file_name": "x.png\0"}, "image entry 0 has file_name 'x.png\\x00': a file name is"),
    "number as name": ({**IMAGE, "file_name": 7}, "image entry 0 has file_name 7: a file name is a path inside"),
    "duplicate id": (
        [IMAGE, {**IMAGE, "file_name": "y.png"}],
        "image id 9 is given to both x.png and y.png: each image needs an id of its own (their annotations would "
        "be merged)",
    ),
}


@pytest.mark.parametrize("bad, message", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_a_broken_coco_image_entry_is_named_when_the_folder_opens(tmp_path, bad, message):
    coco_folder(tmp_path, [annotation()], images=bad if isinstance(bad, list) else [bad])
    assert message in refusal(tmp_path)


BAD_CATEGORIES = {
    "not an object": (
        ["square"],
        "category entry 0 is a str ('square'), not a JSON object: each category is a JSON object with id and name",
    ),
    "text id": (
        [{"id": "1", "name": "square"}],
        "category entry 0 has id '1': category ids are integers (write 1, not \"1\")",
    ),
    "background id": (
        [{"id": 0, "name": "square"}],
        "category entry 0 has id 0: category ids run from 1 (0 is the background) to 100000; number the "
        "categories 1, 2, 3, ...",
    ),
    "huge id": ([{"id": 10**9, "name": "square"}], "category entry 0 has id 1000000000: category ids run from 1"),
    "number as name": ([{"id": 1, "name": 5}], "category entry 0 (id 1) has name 5: a category's name is text"),
    "duplicate id": (
        [{"id": 1, "name": "square"}, {"id": 1, "name": "circle"}],
        "category id 1 is given to both 'square' and 'circle': each category needs an id of its own",
    ),
}


@pytest.mark.parametrize("bad, message", BAD_CATEGORIES.values(), ids=BAD_CATEGORIES.keys())
def test_a_broken_coco_category_is_named_when_the_folder_opens(tmp_path, bad, message):
    coco_folder(tmp_path, [annotation()], categories=bad)
    assert message in refusal(tmp_path)


def test_an_rle_that_does_not_cover_its_image_is_refused(tmp_path):
    # pycocotools decodes it into a mask of uninitialized memory, different on every read
    short = {"size": [20, 30], "counts": rle(RECTANGLE[:5])["counts"]}  # 5 x 30 runs for a 20 x 30 image
    coco_folder(tmp_path, [annotation(segmentation=short)])
    assert (
        "annotation 5 (image x.png): its RLE counts cover 150 pixels but its image has 20 x 30 = 600: the runs "
        "must cover every pixel once" in refusal(tmp_path)
    )
    coco_folder(tmp_path, [annotation(segmentation={"size": [20, 30], "counts": [200, 100]})])  # as a list
    assert "its RLE counts cover 300 pixels" in refusal(tmp_path)


def test_rle_segmentations_as_text_and_as_run_lists_read_exactly(tmp_path):
    # column by column: 4 empty columns and 2 rows, then 10 columns of 6 ones and 14 zeros, the last 16 empty
    runs = [4 * 20 + 2] + [6, 14] * 9 + [6, 12 + 16 * 20]
    as_text, as_list = rle(RECTANGLE), {"size": [20, 30], "counts": runs}
    assert coco.rle_text_runs(as_text["counts"]) == runs  # the decoder agrees with pycocotools' encoder
    coco_folder(tmp_path, [annotation(segmentation=as_text), annotation(id=6, segmentation=as_list, iscrowd=1)])
    masks = coco.CocoFolder(tmp_path)[0][1]["masks"]
    assert torch.equal(masks, torch.from_numpy(np.stack([RECTANGLE, RECTANGLE])))


def test_evaluate_names_a_broken_coco_folder_in_one_line(tmp_path, capsys):
    checkpoint = tmp_path / "weights.pt"
    torch.save(maskrcnn_small(num_classes=len(data.CLASSES)).state_dict(), checkpoint)
    coco_folder(tmp_path / "coco", [annotation(segmentation={"size": [20, 30], "counts": [200, 100]})])
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(checkpoint), "--coco", str(tmp_path / "coco")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err and "pycocotools" not in err
    assert err.startswith(f"error: {tmp_path / 'coco' / 'annotations.json'}: annotation 5 (image x.png): its RLE")


def test_category_ids_the_model_cannot_predict_are_refused(tmp_path):
    categories = [{"id": 1, "name": "square"}, {"id": 12, "name": "bicycle"}]
    coco_folder(tmp_path, [annotation(), annotation(id=6, category_id=12)], categories=categories)
    assert len(coco.CocoFolder(tmp_path)) == 1  # without a model in mind, any category is fine
    message = (
        "1 annotations have category ids the model cannot predict (it has 6 classes, ids 1 to 5), e.g. "
        "annotations 6 (category 12): they would all count as missed"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        coco.CocoFolder(tmp_path, num_classes=6)
    with pytest.raises(ValueError, match=re.escape(message)):  # evaluate asks before running the model
        evaluation.evaluate(maskrcnn_small(num_classes=6), coco.CocoFolder(tmp_path))
