"""The synthetic dataset: scenes of shapes (and a cartoon dog and cat) with their targets, for training.

    image, target = make_scene(seed=7)                  # 1-4 shapes on a 128 x 128 background
    image, target = dog_and_cat_scene()                 # lesson 00's demo: a dog and a cat
    train = ShapesDataset(400, seed=1)                  # 400 scenes, drawn when asked for
    loader = DataLoader(train, batch_size=8, collate_fn=collate)

Shapes:
    H, W    image height and width;  G ground-truth objects in an image
    image   float32 Tensor[3, H, W] in [0, 1]
    target  boxes float32 [G, 4] (x1, y1, x2, y2), labels int64 [G], masks uint8 [G, H, W] (0/1),
            image_id int64 scalar, area float32 [G] (mask pixels), iscrowd int64 [G]
Label i is CLASSES[i]; 0 is the background, never a target's label. Every dataset of the course gives
items of this form: coco.CocoFolder reads COCO folders into it, images.to_image_tensor any picture.

scenes.py paints a scene; this module picks what goes in it and turns the painted masks into a target.
A scene's boxes come from its visible masks, in pixel edges: x1 = first column, x2 = last column + 1,
so a one-pixel object has a 1 x 1 box. Scene images are exactly k / 255 (drawn in uint8), so writing
them to PNG and reading them back gives the same floats: the COCO round trip (coco.py) is exact.

Left out: data augmentation (every scene is new anyway).
"""

import operator
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mrcnn_course.training import scenes
from mrcnn_course.training.images import to_image_tensor


class SceneSet(Protocol):
    """What coco.export_coco and evaluation.evaluate read: len() and [index] -> (image Tensor[3, H, W],
    target), as ShapesDataset and coco.CocoFolder give."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]: ...


CLASSES = ("background", "square", "circle", "triangle", "dog", "cat")
SHAPES = ("square", "circle", "triangle")
OBJECT_SIZE = (0.15, 0.45)  # an object's size as a share of the image's short side: 19-58 px at 128
MIN_SIDE = 16  # the smallest image side that still fits a recognisable object
SEEDS_PER_DATASET = 2**32  # ShapesDataset(seed=s)[i] is make_scene(s * 2**32 + i): seeds never overlap
MAX_DATASET_SEED = 2**31  # keeps s * 2**32 + i inside int64 (image_id)
DOG_AND_CAT_SEED = 101  # chosen by eye: a yellow dog and a ginger cat on a pink gradient


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
