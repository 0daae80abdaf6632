"""The course's data: synthetic scenes with instance masks, images from anywhere, COCO folders.

    image, target = make_scene(seed=7)                  # 1-4 shapes on a 128 x 128 background
    image, target = dog_and_cat_scene()                 # lesson 00's demo: a dog and a cat
    train = ShapesDataset(400, seed=1)                  # 400 scenes, drawn when asked for
    loader = DataLoader(train, batch_size=8, collate_fn=collate)
    export_coco(ShapesDataset(20), "shapes_coco")       # PNGs + annotations.json
    coco = CocoFolder("shapes_coco")                    # any COCO-format folder, read back

Shapes:
    H, W    image height and width;  G ground-truth objects in an image
    image   float32 Tensor[3, H, W] in [0, 1]
    target  boxes float32 [G, 4] (x1, y1, x2, y2), labels int64 [G], masks uint8 [G, H, W] (0/1),
            image_id int64 scalar, area float32 [G] (mask pixels), iscrowd int64 [G]
Label i is CLASSES[i]; 0 is the background, never a target's label.

A scene's boxes come from its visible masks, in pixel edges: x1 = first column, x2 = last column + 1,
so a one-pixel object has a 1 x 1 box. Scene images are exactly k / 255 (drawn in uint8), so writing
them to PNG and reading them back gives the same floats: the COCO round trip is exact.

Left out: data augmentation (every scene is new anyway), keypoints, crowd-aware training on COCO
(CocoFolder passes iscrowd through; the model trains on every box it is given).
"""

import contextlib
import io
import json
import operator
import os
from pathlib import Path
from typing import Protocol, TypeGuard

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

from mrcnn_course.model.mask_head import MASK_THRESHOLD
from mrcnn_course.training import scenes
from mrcnn_course.training.encoding import encode_detections


class SceneSet(Protocol):
    """What export_coco and evaluation.evaluate read: len() and [index] -> (image Tensor[3, H, W], target),
    as ShapesDataset and CocoFolder give."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]: ...


CLASSES = ("background", "square", "circle", "triangle", "dog", "cat")
SHAPES = ("square", "circle", "triangle")
OBJECT_SIZE = (0.15, 0.45)  # an object's size as a share of the image's short side: 19-58 px at 128
MIN_SIDE = 16  # the smallest image side that still fits a recognisable object
SEEDS_PER_DATASET = 2**32  # ShapesDataset(seed=s)[i] is make_scene(s * 2**32 + i): seeds never overlap
MAX_DATASET_SEED = 2**31  # keeps s * 2**32 + i inside int64 (image_id)
DOG_AND_CAT_SEED = 101  # chosen by eye: a yellow dog and a ginger cat on a pink gradient
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # how PIL opens a 16-bit grayscale PNG (I: older Pillows)


def make_scene(
    seed: int,
    image_size: int | tuple[int, int] = 128,
    num_objects: tuple[int, int] = (1, 4),
    classes: tuple[str, ...] = SHAPES,
) -> tuple[Tensor, dict[str, Tensor]]:
    """A random scene, the same for the same arguments in any process (numpy's PCG64 generator, seeded here;
    numpy seldom changes its random streams between releases, though NEP 19 does not promise they stay).

    Args:
        seed: a non-negative integer; also the target's image_id
        image_size: side of a square image, or (H, W)
        num_objects: (fewest, most) objects drawn; fully hidden ones are dropped from the target
        classes: names from CLASSES[1:] to draw from
    Returns:
        image float32 Tensor[3, H, W] in [0, 1] and its target (see the module docstring). Objects are
        drawn in order, later ones in front; each mask is what stays visible of its object.
    """
    height, width = scene_size(image_size)
    check_scene_options(classes, num_objects)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    rng = np.random.default_rng(seed)  # a generator of our own: the global random state is not touched
    short = min(height, width)
    placements = []
    for _ in range(rng.integers(num_objects[0], num_objects[1] + 1)):
        name = classes[rng.integers(len(classes))]
        size = rng.uniform(*OBJECT_SIZE) * short
        # the centre keeps the whole object inside the image
        placements.append(
            scenes.Placement(
                name, rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2), size
            )
        )
    return render(rng, height, width, placements, seed)


def dog_and_cat_scene(image_size: int = 256) -> tuple[Tensor, dict[str, Tensor]]:
    """The demo scene "a dog and a cat": a dog on the left, a cat on the right slightly in front of it.
    Always the same picture (scaled to `image_size`); image_id is DOG_AND_CAT_SEED."""
    side, _ = scene_size(image_size)
    # each animal 40% of the side, inside the training sizes (OBJECT_SIZE), overlapping a little
    placements = [
        scenes.Placement("dog", 0.33 * side, 0.53 * side, 0.40 * side),
        scenes.Placement("cat", 0.67 * side, 0.49 * side, 0.40 * side),
    ]
    return render(np.random.default_rng(DOG_AND_CAT_SEED), side, side, placements, DOG_AND_CAT_SEED)


def render(
    rng: np.random.Generator, height: int, width: int, placements: list[scenes.Placement], image_id: int
) -> tuple[Tensor, dict[str, Tensor]]:
    pixels, visible = scenes.draw_scene(rng, height, width, placements)  # (H, W, 3) uint8, (n, H, W) bool
    labels = np.array([CLASSES.index(p.name) for p in placements], dtype=np.int64)
    return to_image_tensor(pixels), target_from_masks(visible, labels, image_id)


def target_from_masks(masks: np.ndarray, labels: np.ndarray, image_id: int) -> dict[str, Tensor]:
    """A target from visible masks bool (n, H, W) and labels (n,): objects with no visible pixel are dropped
    (a hidden object has no box and nothing to learn from). Works in numpy, on one thread: on busy cores,
    torch's thread pool makes small ops like these many times slower."""
    keep = masks.any(axis=(1, 2))  # (n,)
    masks = masks[keep]  # (G, H, W)
    return {
        "boxes": torch.from_numpy(masks_to_boxes(masks)),
        "labels": torch.from_numpy(labels[keep]),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
        "image_id": torch.tensor(image_id, dtype=torch.int64),
        "area": torch.from_numpy(masks.sum(axis=(1, 2), dtype=np.float32)),
        "iscrowd": torch.zeros(len(masks), dtype=torch.int64),
    }


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Boxes around non-empty masks (G, H, W) -> float32 (G, 4): (first column, first row, last column + 1,
    last row + 1). Unlike torchvision.ops.masks_to_boxes (x2 = last column), the box covers whole pixels."""
    height, width = masks.shape[-2:]
    rows = np.asarray(masks.any(axis=2))  # (G, H): which rows hold the mask
    cols = np.asarray(masks.any(axis=1))  # (G, W): which columns
    y1, x1 = rows.argmax(axis=1), cols.argmax(axis=1)  # argmax gives the first True
    y2, x2 = height - rows[:, ::-1].argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32).reshape(-1, 4)


def scene_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int or a pair, checked."""
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and s >= MIN_SIDE for s in size)
    ):
        raise ValueError(f"image_size must be an int or (height, width), each at least {MIN_SIDE}, got {image_size!r}")
    return (size[0], size[1])


def check_scene_options(classes: tuple[str, ...], num_objects: tuple[int, int]) -> None:
    if isinstance(classes, str) or not classes or any(c not in CLASSES[1:] for c in classes):
        raise ValueError(f"classes {classes!r}: give a tuple of names from {CLASSES[1:]}")
    if len(num_objects) != 2 or not 0 <= num_objects[0] <= num_objects[1]:
        raise ValueError(f"num_objects must be (fewest, most) with 0 <= fewest <= most, got {num_objects!r}")


class ShapesDataset(Dataset):
    """`num_images` scenes, drawn when an item is asked for: item i is make_scene(seed * 2**32 + i, ...),
    so datasets with different seeds share no scene (for fewer than 2**32 images)."""

    def __init__(
        self,
        num_images: int,
        image_size: int | tuple[int, int] = 128,
        seed: int = 0,
        classes: tuple[str, ...] = SHAPES,
        num_objects: tuple[int, int] = (1, 4),
    ):
        scene_size(image_size)  # bad options fail here, not in the middle of training
        check_scene_options(classes, num_objects)
        if not isinstance(num_images, int) or num_images < 0:
            raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
        if not isinstance(seed, int) or not 0 <= seed < MAX_DATASET_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
        self.num_images, self.image_size, self.seed = num_images, image_size, seed
        self.classes, self.num_objects = tuple(classes), (num_objects[0], num_objects[1])

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        index = operator.index(index)  # an integer: 1.0 is a mistake, np.int64(1) is fine
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} scenes")
        return make_scene(self.seed * SEEDS_PER_DATASET + index, self.image_size, self.num_objects, self.classes)


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """[(image, target), ...] -> ([images], [targets]): images of different sizes cannot be stacked, and
    the model takes lists (DataLoader(..., collate_fn=collate))."""
    return [image for image, _ in batch], [target for _, target in batch]


def to_image_tensor(image: "Image.Image | np.ndarray | Tensor | str | os.PathLike") -> Tensor:
    """float32 Tensor[3, H, W] in [0, 1] from a PIL image, a uint8 numpy array (H, W, 3), an image file,
    or a tensor: uint8 (H, W, 3) or (3, H, W), float (3, H, W) in [0, 1].

    Grayscale is repeated into 3 channels; an alpha channel (RGBA) is dropped; 16-bit grayscale (a 16-bit PNG)
    is read at its level (value / 65535). A uint8 tensor whose first
    dimension is 1, 3 or 4 is read as channels-first. Anything else raises a ValueError that says what was
    wrong (a missing file: FileNotFoundError).
    """
    if isinstance(image, (str, os.PathLike)):
        image = read_image(Path(image))
    if isinstance(image, Image.Image) and image.mode in SIXTEEN_BIT_MODES:
        # convert("RGB") would clip every value above 255 to white: scale the 16 bits to [0, 1] instead
        pixels = np.asarray(image).astype(np.float32)  # (H, W)
        brightest = float(np.max(pixels)) if pixels.size else 0.0
        if brightest > 65535:
            raise ValueError(f"a {image.mode} image holds values up to {brightest:.0f}: expected 16-bit pixels")
        image = torch.from_numpy(pixels / 65535)  # (H, W) gray in [0, 1]
    elif isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))  # L, LA, P, RGBA, CMYK, ... -> RGB
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(
                f"a numpy image must be uint8 (H, W, 3), got dtype {image.dtype}: convert it, e.g. "
                f"(array * 255).round().astype(np.uint8) for values in [0, 1]"
            )
        if not (image.ndim == 2 or image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
            raise ValueError(
                f"a numpy image must be (H, W, 3) (or (H, W) gray, (H, W, 4) RGBA), got shape {image.shape}"
            )
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0) if image.ndim == 3 else image))
    if not isinstance(image, Tensor):
        raise ValueError(
            f"cannot make an image of a {type(image).__name__}: give a PIL image, a uint8 numpy "
            f"array (H, W, 3), a tensor or a path to an image file"
        )
    if image.dim() == 2:
        image = image[None]  # (H, W) grayscale -> (1, H, W)
    elif image.dim() == 3 and image.dtype == torch.uint8 and image.shape[0] not in (1, 3, 4):
        image = image.permute(2, 0, 1)  # uint8 (H, W, C) -> (C, H, W)
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        image = image.float() / 255
    elif image.is_floating_point():
        low, high = image.min().item(), image.max().item()
        if not (low >= 0 and high <= 1):  # written so that NaN fails too
            raise ValueError(
                f"a float image must lie in [0, 1], this one spans [{low:.3g}, {high:.3g}]: divide 0-255 values by 255"
            )
        image = image.float()
    else:
        raise ValueError(f"an image tensor must be uint8 or float, got {image.dtype}")
    image = image[:3] if image.shape[0] == 4 else image.expand(3, -1, -1)  # drop alpha; gray -> RGB
    return image.contiguous()


def read_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as file:
            file.load()  # decode now: a corrupt file fails here, not later
            return file.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read {path} as an image ({error}): is it a PNG or JPEG file? "
            f"Open it in an image viewer, or export it again"
        ) from None


# ----- COCO format -----
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

    Item i is (image, target) for the json's i-th image, in make_scene's target form; labels are the
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
