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
            (a.get("id", f"#{n}"), a["category_id"])
            for n, a in enumerate(self.coco.dataset["annotations"])
            if a["category_id"] >= num_classes
        ]
        if unknown:
            shown = ", ".join(f"{a} (category {c})" for a, c in unknown[:5])
            raise ValueError(
                f"{self.annotations_path}: {len(unknown)} annotations have category ids the model cannot "
                f"predict (it has {num_classes} classes, ids 1 to {num_classes - 1}), e.g. annotations {shown}: "
                f"they would all count as missed; evaluate a model trained on these categories, or remove those "
                f"annotations"
            )

    def __len__(self) -> int:
        return len(self.coco.dataset["images"])

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.coco.dataset["images"][index]
        image = to_image_tensor(self.folder / self.images / info["file_name"])
        height, width = image.shape[-2:]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise ValueError(
                f"{info['file_name']} is {height} x {width} but the annotations say "
                f"{info['height']} x {info['width']}: the json does not belong to these images"
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
    cannot read correctly, and how to fix it: missing or duplicate ids, a missing bbox, a segmentation that
    is not a polygon of at least 3 points or an RLE, a category id that is not an integer from 1."""
    files: dict[int, str] = {}  # image id -> file name
    for n, image in enumerate(content["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ValueError(f"{path}: image entry {n} lacks 'id' or 'file_name': each image needs both")
        if image["id"] in files:
            raise ValueError(
                f"{path}: image id {image['id']} is given to both {files[image['id']]} and {image['file_name']}: "
                f"each image needs an id of its own (their annotations would be merged)"
            )
        files[image["id"]] = image["file_name"]
    for n, category in enumerate(content["categories"]):
        if not isinstance(category, dict) or not is_integer(category.get("id")):
            raise ValueError(f"{path}: category entry {n} has id {category.get('id')!r}: category ids are integers")
    for n, annotation in enumerate(content["annotations"]):
        name = annotation.get("id", f"#{n}") if isinstance(annotation, dict) else f"#{n}"
        where = f"{path}: annotation {name}"
        if not isinstance(annotation, dict) or annotation.get("image_id") not in files:
            raise ValueError(f"{where} refers to no image of the json (image_id {annotation.get('image_id')!r})")
        where += f" (image {files[annotation['image_id']]})"
        category = annotation.get("category_id")
        if not is_integer(category):
            raise ValueError(
                f"{where} has category_id {category!r}, a {type(category).__name__}: category ids are integers "
                f'(write 3, not "3")'
            )
        if category < 1:
            raise ValueError(f"{where} has category_id {category}: category ids start at 1 (0 is the background)")
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box) and min(box[2:]) >= 0):
            raise ValueError(
                f"{where} has bbox {box!r}: each annotation needs bbox [x, y, width, height] "
                f"(numbers, width and height at least 0)"
            )
        problem = segmentation_problem(annotation.get("segmentation"))
        if problem:
            raise ValueError(f"{where}: {problem}; fix the segmentation, or drop the annotation")


def segmentation_problem(segmentation) -> str:
    """What is wrong with a COCO segmentation, or "" if pycocotools can read it: a list of polygons, each
    [x1, y1, x2, y2, ...] with at least 3 points, or an RLE {"size": [H, W], "counts": ...}."""
    if isinstance(segmentation, dict):
        if "size" in segmentation and "counts" in segmentation:
            return ""
        return f"its RLE segmentation lacks 'size' or 'counts' (has {sorted(segmentation)})"
    if not isinstance(segmentation, list) or not segmentation:
        return f"its segmentation is {segmentation!r}: Mask R-CNN needs a mask, as polygons or as an RLE"
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(is_number(v) for v in polygon):
            return "a polygon of its segmentation is not a list of numbers [x1, y1, x2, y2, ...]"
        if len(polygon) < 6 or len(polygon) % 2:
            return (
                f"a polygon of its segmentation has {len(polygon)} numbers: a polygon needs x, y pairs of "
                f"3 points or more"
            )
    return ""


def is_integer(value) -> TypeGuard[int]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
