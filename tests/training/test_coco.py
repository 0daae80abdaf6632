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


BAD_COCO = [
    (annotation(segmentation=[]), "annotation 5 (image x.png): its segmentation is []: Mask R-CNN needs a mask"),
    (
        annotation(segmentation=[[4, 2, 14, 2]]),
        "annotation 5 (image x.png): a polygon of its segmentation has 4 "
        "numbers: a polygon needs x, y pairs of 3 points or more; fix the segmentation, or drop the annotation",
    ),
    (annotation(segmentation={"counts": "abc"}), "its RLE segmentation lacks 'size' or 'counts'"),
    (
        annotation(bbox=None),
        "annotation 5 (image x.png) has bbox None: each annotation needs bbox [x, y, width, height]",
    ),
    (annotation(category_id="1"), "annotation 5 (image x.png) has category_id '1', a str: category ids are integers"),
    (annotation(category_id=0), "annotation 5 (image x.png) has category_id 0: category ids start at 1"),
    (annotation(image_id=3), "annotation 5 refers to no image of the json (image_id 3)"),
]


@pytest.mark.parametrize("bad, message", BAD_COCO)
def test_a_broken_coco_annotation_is_named_when_the_folder_opens(tmp_path, bad, message):
    coco_folder(tmp_path, [bad])
    with pytest.raises(ValueError, match=re.escape(message)):
        coco.CocoFolder(tmp_path)


def test_duplicate_image_ids_and_string_category_ids_are_refused(tmp_path):
    twice = [{"id": 9, "file_name": "x.png"}, {"id": 9, "file_name": "y.png"}]
    coco_folder(tmp_path, [annotation()], images=twice)
    with pytest.raises(ValueError, match=re.escape("image id 9 is given to both x.png and y.png: each image needs")):
        coco.CocoFolder(tmp_path)
    coco_folder(tmp_path, [annotation()], categories=[{"id": "1", "name": "square"}])
    with pytest.raises(ValueError, match=re.escape("category entry 0 has id '1': category ids are integers")):
        coco.CocoFolder(tmp_path)


def test_category_ids_the_model_cannot_predict_are_refused(tmp_path):
    coco_folder(tmp_path, [annotation(), annotation(id=6, category_id=12)])
    assert len(coco.CocoFolder(tmp_path)) == 1  # without a model in mind, any category is fine
    message = (
        "1 annotations have category ids the model cannot predict (it has 6 classes, ids 1 to 5), e.g. "
        "annotations 6 (category 12): they would all count as missed"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        coco.CocoFolder(tmp_path, num_classes=6)
    with pytest.raises(ValueError, match=re.escape(message)):  # evaluate asks before running the model
        evaluation.evaluate(maskrcnn_small(num_classes=6), coco.CocoFolder(tmp_path))
