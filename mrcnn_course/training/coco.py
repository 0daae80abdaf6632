"""The COCO format: write a dataset as a COCO folder, read any COCO folder back, and check it first.

    export_coco(ShapesDataset(20), "shapes_coco")       # images/<image_id>.png + annotations.json
    coco = CocoFolder("shapes_coco")                    # any COCO-format folder, read back
    coco = CocoFolder("coco", "annotations/instances_val2017.json", images="val2017")   # COCO itself

Shapes:
    H, W    image height and width;  G objects in an image
    items   (image float32 Tensor[3, H, W] in [0, 1], target) in data.py's target form: boxes float32
            [G, 4] (x1, y1, x2, y2), labels int64 [G] (the category ids), masks uint8 [G, H, W] (0/1),
            image_id int64 scalar, area float32 [G], iscrowd int64 [G]
In the json, bbox is [x, y, width, height] and a segmentation is a list of polygons or a run-length
encoding (RLE), as pycocotools reads them. Scene images are exactly k / 255, so a synthetic dataset
exported and read back gives the same tensors.

Left out: keypoints, panoptic and caption annotations, crowd-aware training (CocoFolder passes iscrowd
through; the model trains on every box it is given).
"""

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import TypeGuard

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from mrcnn_course.model.mask_head import MASK_THRESHOLD
from mrcnn_course.training.data import CLASSES, SHAPES, SceneSet
from mrcnn_course.training.encoding import encode_detections
from mrcnn_course.training.images import to_image_tensor

# The largest category id CocoFolder accepts: class_names has an entry per id up to the largest, so an id of
# 10**9 would take gigabytes. COCO's largest is 90, LVIS's 1203.
MAX_CATEGORY_ID = 100_000


def coco_annotations(target: dict[str, Tensor], image_id: int, first_id: int = 1) -> list[dict]:
    """A target's objects as COCO annotations, ids first_id, first_id + 1, ... (start at 1: COCOeval reads id 0
    as "no match"). target: boxes Tensor[G, 4], labels Tensor[G], masks Tensor[G, H, W] (0/1), and if given
    area Tensor[G] (else the masks' pixels) and iscrowd Tensor[G] (else 0). bbox is [x, y, width, height],
    the segmentation COCO's run-length text."""
    encoded = encode_detections(target)  # the masks as run-length text, above MASK_THRESHOLD
    height, width = encoded["size"]
    count = len(target["boxes"])
    pixels = (target["masks"].flatten(1) > MASK_THRESHOLD).sum(1)  # (G,): each mask's area in pixels
    areas = target["area"].tolist() if "area" in target else pixels.tolist()
    crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * count
    rows = zip(target["boxes"].tolist(), target["labels"].tolist(), encoded["masks"], areas, crowd)
    return [
        {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": label,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": area,
            "iscrowd": iscrowd,
            "segmentation": {"size": [height, width], "counts": counts},
        }
        for k, ((x1, y1, x2, y2), label, counts, area, iscrowd) in enumerate(rows)
    ]


def export_coco(dataset: SceneSet, folder: str | os.PathLike) -> Path:
    """Write `dataset` as a COCO folder: folder/images/<image_id>.png and folder/annotations.json (bbox
    [x, y, w, h], segmentation as RLE, area, iscrowd, category_id = label, categories CLASSES[1:]).
    Returns the path of annotations.json. CocoFolder(folder) reads it back unchanged."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    seen: set[int] = set()
    for index in range(len(dataset)):
        image, target = dataset[index]
        missing = {"boxes", "labels", "masks", "image_id", "area", "iscrowd"} - set(target)
        if missing:
            raise ValueError(
                f"item {index}'s target lacks {sorted(missing)}: export_coco needs the full target form of make_scene"
            )
        image_id = int(target["image_id"])
        if image_id in seen:
            raise ValueError(f"item {index} has image_id {image_id}, as an earlier item: COCO ids must be unique")
        seen.add(image_id)
        pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)  # (H, W, 3)
        file_name = f"{image_id}.png"
        Image.fromarray(pixels.numpy()).save(folder / "images" / file_name)
        height, width = image.shape[-2:]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        annotations += coco_annotations(target, image_id, first_id=len(annotations) + 1)
    categories = [
        {"id": i, "name": name, "supercategory": "shape" if name in SHAPES else "animal"}
        for i, name in enumerate(CLASSES)
        if i > 0
    ]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


class CocoFolder(Dataset):
    """Any COCO-format folder: folder/annotations (the json) and the images under folder/images.

    Item i is (image, target) for the json's i-th image, in data.make_scene's target form; labels are the
    category ids (as torchvision's COCO models use them) and class_names[label] is the category's name.
    Segmentations may be polygons or RLE. Annotations whose box has no width or height are dropped.
    For COCO itself: CocoFolder("coco", "annotations/instances_val2017.json", images="val2017").
    num_classes: the model's (background included); category ids it cannot predict are refused up front.
    Every image and annotation is checked when the folder is opened (check_coco), so a broken entry is
    named then, not deep inside pycocotools in the middle of a run.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        annotations: str = "annotations.json",
        images: str = "images",
        num_classes: int | None = None,
    ):
        self.folder, self.images = Path(folder), images
        path = self.folder / annotations
        if not path.is_file():
            raise FileNotFoundError(
                f"no COCO annotations at {path}: give the folder that holds {annotations} (export_coco writes "
                f"one), or name the json and the images' folder inside it: CocoFolder(folder, annotations=..., "
                f"images=...), on the command line --coco-annotations and --coco-images"
            )
        try:
            content = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error})") from None
        missing = [
            key
            for key in ("images", "annotations", "categories")
            if not isinstance(content, dict) or not isinstance(content.get(key), list)
        ]
        if missing:
            raise ValueError(
                f"{path} is not COCO instance annotations: it lacks the lists {missing} (a COCO json "
                f"holds images, annotations and categories)"
            )
        check_coco(content, path)
        self.annotations_path = path
        self.coco = COCO()
        self.coco.dataset = content
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
            self.coco.createIndex()
        names = {c["id"]: c.get("name", f"class {c['id']}") for c in content["categories"]}
        self.class_names = ["background"] + [names.get(i, f"class {i}") for i in range(1, max(names, default=0) + 1)]
        if num_classes is not None:
            self.check_classes(num_classes)

    def check_classes(self, num_classes: int) -> None:
        """Refuse category ids that a model of `num_classes` (background included) cannot predict: its mAP
        would count those objects as missed without a word (evaluation.evaluate calls this too)."""
        unknown = [  # (annotation id, category id)
            (a["id"], a["category_id"]) for a in self.coco.dataset["annotations"] if a["category_id"] >= num_classes
        ]
        if unknown:
            examples = ", ".join(f"{a} (category {c})" for a, c in unknown[:5])
            raise ValueError(
                f"{self.annotations_path}: {len(unknown)} annotations have category ids the model cannot "
                f"predict (it has {num_classes} classes, ids 1 to {num_classes - 1}), e.g. annotations {examples}: "
                f"they would all count as missed; evaluate a model trained on these categories, or remove those "
                f"annotations"
            )

    def __len__(self) -> int:
        return len(self.coco.dataset["images"])

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.coco.dataset["images"][index]
        image = to_image_tensor(self.folder / self.images / info["file_name"])
        height, width = image.shape[-2:]
        if (info["height"], info["width"]) != (height, width):
            raise ValueError(
                f"{self.annotations_path}: image entry {index} ({info['file_name']}) says {info['height']} x "
                f"{info['width']} but the file is {height} x {width}: the json does not belong to these images"
            )
        kept = [a for a in self.coco.imgToAnns[info["id"]] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        masks = [self.coco.annToMask(a) for a in kept]  # (H, W) uint8 each, from polygons or RLE
        boxes = torch.tensor([a["bbox"] for a in kept], dtype=torch.float32).reshape(-1, 4)  # (G, 4) x, y, w, h
        return image, {
            "boxes": torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1),  # -> x1, y1, x2, y2
            "labels": torch.tensor([a["category_id"] for a in kept], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width, dtype=torch.uint8),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
            "area": torch.tensor([a.get("area", float(m.sum())) for a, m in zip(kept, masks)], dtype=torch.float32),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in kept], dtype=torch.int64),
        }


def check_coco(content: dict, path: Path) -> None:
    """Raise a ValueError naming the first image, category or annotation of a COCO json that CocoFolder
    cannot read correctly, the file, and how to fix it. Checked: every entry is a JSON object; images have
    an integer id of their own, a file name inside the images folder, a height and width in pixels;
    categories an integer id from 1 to MAX_CATEGORY_ID of their own; annotations an integer id of their
    own, the id of an image and of a category of the json, a bbox, a segmentation of that image
    (segmentation_problem), iscrowd 0 or 1 and an area of at least 0 where given. pycocotools trusts all
    of these: it would fail deep inside (KeyError: 'height') or, for RLE counts that do not cover the image,
    give masks of uninitialized memory."""
    images = check_images(content["images"], path)
    categories = check_categories(content["categories"], path)
    check_annotations(content["annotations"], path, images, categories)


def check_images(images: list, path: Path) -> dict[int, tuple[str, int, int]]:
    """The images of a COCO json by id: (file_name, height, width); a ValueError names a broken entry."""
    checked: dict[int, tuple[str, int, int]] = {}
    for n, image in enumerate(images):
        where = f"{path}: image entry {n}"
        if not isinstance(image, dict):
            raise ValueError(
                f"{where} is {not_an_object(image)}: each image is a JSON object with id, file_name, height and width"
            )
        missing = [key for key in ("id", "file_name", "height", "width") if key not in image]
        if missing:
            raise ValueError(
                f"{where} lacks {', '.join(map(repr, missing))}: each image needs an id, its file_name, and its "
                f"height and width in pixels"
            )
        name = image["file_name"]
        if (
            not isinstance(name, str)
            or not name
            or "\0" in name
            or Path(name).is_absolute()
            or ".." in Path(name).parts
        ):
            raise ValueError(
                f"{where} has file_name {name!r}: a file name is a path inside the images folder (like "
                f"'000139.jpg'), without '..' and not absolute, so that images are read from the dataset only"
            )
        where += f" ({name})"
        if not is_integer(image["id"]):
            raise ValueError(f'{where} has id {image["id"]!r}: image ids are integers (write 9, not "9")')
        height, width = image["height"], image["width"]
        if not (is_integer(height) and is_integer(width) and height >= 1 and width >= 1):
            raise ValueError(
                f"{where} has height {height!r} and width {width!r}: give the image's size in pixels, integers from 1"
            )
        if image["id"] in checked:
            raise ValueError(
                f"{path}: image id {image['id']} is given to both {checked[image['id']][0]} and {name}: "
                f"each image needs an id of its own (their annotations would be merged)"
            )
        checked[image["id"]] = name, height, width
    return checked


def check_categories(categories: list, path: Path) -> set[int]:
    """The category ids of a COCO json; a ValueError names a broken entry."""
    names: dict[int, str] = {}  # category id -> name
    for n, category in enumerate(categories):
        where = f"{path}: category entry {n}"
        if not isinstance(category, dict):
            raise ValueError(f"{where} is {not_an_object(category)}: each category is a JSON object with id and name")
        number, name = category.get("id"), category.get("name", f"class {category.get('id')}")
        if not is_integer(number):
            raise ValueError(f'{where} has id {number!r}: category ids are integers (write 1, not "1")')
        if not 1 <= number <= MAX_CATEGORY_ID:
            raise ValueError(
                f"{where} has id {number}: category ids run from 1 (0 is the background) to {MAX_CATEGORY_ID}; "
                f"number the categories 1, 2, 3, ..."
            )
        if not isinstance(name, str):
            raise ValueError(f"{where} (id {number}) has name {name!r}: a category's name is text")
        if number in names:
            raise ValueError(
                f"{path}: category id {number} is given to both {names[number]!r} and {name!r}: each category "
                f"needs an id of its own"
            )
        names[number] = name
    return set(names)


def check_annotations(
    annotations: list, path: Path, images: dict[int, tuple[str, int, int]], categories: set[int]
) -> None:
    """A ValueError naming the first broken annotation of a COCO json; images and categories are the json's
    (check_images, check_categories)."""
    entries: dict[int, int] = {}  # annotation id -> its entry's index
    for n, annotation in enumerate(annotations):
        where = f"{path}: annotation entry #{n}"
        if not isinstance(annotation, dict):
            raise ValueError(
                f"{where} is {not_an_object(annotation)}: each annotation is a JSON object with id, image_id, "
                f"category_id, bbox and segmentation"
            )
        number = annotation.get("id")
        if not is_integer(number):
            raise ValueError(f"{where} has id {number!r}: each annotation needs an integer id of its own")
        if number in entries:
            raise ValueError(
                f"{path}: annotation id {number} is given to entries #{entries[number]} and #{n}: each annotation "
                f"needs an id of its own (pycocotools keeps one annotation per id)"
            )
        entries[number] = n
        where = f"{path}: annotation {number}"
        image_id = annotation.get("image_id")
        if not is_integer(image_id) or image_id not in images:
            raise ValueError(
                f"{where} refers to no image of the json (image_id {image_id!r}): give the id of one of its "
                f"images, or drop the annotation"
            )
        file_name, height, width = images[image_id]
        where += f" (image {file_name})"
        category = annotation.get("category_id")
        if not is_integer(category):
            raise ValueError(
                f"{where} has category_id {category!r}, a {type(category).__name__}: category ids are integers "
                f'(write 3, not "3")'
            )
        if category < 1:
            raise ValueError(f"{where} has category_id {category}: category ids start at 1 (0 is the background)")
        if category not in categories:
            raise ValueError(
                f"{where} has category_id {category}, which no category of the json has (ids "
                f"{sorted(categories)}): add the category to the json's categories, or fix the id"
            )
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box) and min(box[2:]) >= 0):
            raise ValueError(
                f"{where} has bbox {shown(box)}: each annotation needs bbox [x, y, width, height] "
                f"(numbers, width and height at least 0)"
            )
        problem = segmentation_problem(annotation.get("segmentation"), (height, width))
        if problem:
            raise ValueError(f"{where}: {problem}; fix the segmentation, or drop the annotation")
        crowd = annotation.get("iscrowd", 0)
        if not (is_integer(crowd) and crowd in (0, 1)):
            raise ValueError(f"{where} has iscrowd {crowd!r}: iscrowd is 0 (an object) or 1 (a crowd region)")
        area = annotation.get("area", 0)
        if not (is_number(area) and area >= 0):
            raise ValueError(
                f"{where} has area {area!r}: the area is the object's size in pixels, a number from 0 (or leave "
                f"it out: the mask's pixels are counted)"
            )


def segmentation_problem(segmentation, size: tuple[int, int]) -> str:
    """What is wrong with a COCO segmentation of an image of `size` (height, width), or "" if pycocotools
    reads it right: a list of polygons, each [x1, y1, x2, y2, ...] with at least 3 points, or an RLE
    {"size": [height, width], "counts": ...} whose counts (a list of run lengths or COCO's compressed text)
    cover the image's pixels exactly."""
    height, width = size
    if isinstance(segmentation, dict):
        if "size" not in segmentation or "counts" not in segmentation:
            return f"its RLE segmentation lacks 'size' or 'counts' (has {sorted(segmentation)})"
        size_given = segmentation["size"]
        if not (isinstance(size_given, list) and all(map(is_integer, size_given)) and size_given == [height, width]):
            return (
                f"its RLE has size {size_given!r} but its image is {height} x {width}: an RLE's size "
                f"is [height, width] of its image"
            )
        counts = segmentation["counts"]
        runs = rle_text_runs(counts) if isinstance(counts, str) else counts
        if not isinstance(runs, list) or not all(is_integer(run) and run >= 0 for run in runs):
            return (
                f"its RLE counts {shown(counts)} are not run lengths: counts are a list of integers from 0 "
                f"or COCO's compressed text (pycocotools' mask.encode writes it)"
            )
        if sum(runs) != height * width:
            return (
                f"its RLE counts cover {sum(runs)} pixels but its image has {height} x {width} = {height * width}: "
                f"the runs must cover every pixel once (was the RLE made for another image size?)"
            )
        return ""
    if not isinstance(segmentation, list) or not segmentation:
        return f"its segmentation is {shown(segmentation)}: Mask R-CNN needs a mask, as polygons or as an RLE"
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(is_number(v) for v in polygon):
            return "a polygon of its segmentation is not a list of numbers [x1, y1, x2, y2, ...]"
        if len(polygon) < 6 or len(polygon) % 2:
            return (
                f"a polygon of its segmentation has {len(polygon)} numbers: a polygon needs x, y pairs of "
                f"3 points or more"
            )
    return ""


def rle_text_runs(text: str) -> list[int] | None:
    """The run lengths of an RLE in COCO's compressed text, or None if `text` is not that form. As
    pycocotools' rleFrString: each run is a little-endian number in 5-bit groups, one character each
    (chr(48 + group), 0x20 set while more groups follow, 0x10 of the last the sign), and from the fourth
    run on, each is stored as its difference from the run two before."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position == len(text):
                return None  # the text ends inside a number
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                return None
            value |= (group & 0x1F) << shift
            more, position, shift = bool(group & 0x20), position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift  # a negative difference
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def not_an_object(value) -> str:
    """How a json value that should be an object reads in a message: "a list ([5, 9]), not a JSON object"."""
    return f"a {type(value).__name__} ({shown(value)}), not a JSON object"


def shown(value) -> str:
    """A json value as a message shows it: its repr, cut after 40 characters (an RLE's counts can be long)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def is_integer(value) -> TypeGuard[int]:
    """An integer that fits int64 (the tensors' type; json reads any number of digits), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(-(2**63) <= value < 2**63)


def is_number(value) -> bool:
    """A finite number: an integer (is_integer) or a float that is not NaN or infinite (json reads both)."""
    return is_integer(value) or isinstance(value, (float, np.floating)) and math.isfinite(value)
