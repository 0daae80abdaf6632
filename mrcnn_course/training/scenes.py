"""Drawing the synthetic scenes: a square, a circle, a triangle, a cartoon dog and a cartoon cat.

Everything is drawn with numpy on a grid of pixel centres: a shape is a boolean mask (H, W), true where
a pixel's centre lies inside it. An object is a list of Layers (a mask and its colour) painted in order:
the dog is two ears, a head, a muzzle, a nose and two eyes. The union of its layers is its silhouette,
its instance mask before anything covers it. paint() draws objects in order, so later objects occlude
earlier ones, and returns what stays visible of each.

Shapes:
    H, W    image height and width in pixels
    n       objects in a scene
    u       half an object's size: every drawing fits in a 2u x 2u square around (cx, cy)
Colours are RGB floats in [0, 1]; the painted image is quantized to uint8 once, at the end.

Left out: anti-aliasing (edges are hard, so a mask matches its pixels exactly), rotation, texture,
shading. data.py turns the painted masks into targets (boxes, labels, ...).
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Grid = tuple[np.ndarray, np.ndarray]  # (ys, xs), each (H, W): the pixel centres' coordinates
Layer = tuple[np.ndarray, np.ndarray]  # (mask bool (H, W), colour (3,))

MIN_CONTRAST = 0.3  # RGB distance an object's colour keeps from the background and earlier objects
GRADIENT = 0.25  # brightness change across a gradient background: gentle, never a second "object"
NOISE = 0.03  # standard deviation of a noisy background's pixels
DARK = np.array([0.08, 0.06, 0.05])  # eyes and noses, on a light animal
LIGHT = np.array([0.95, 0.95, 0.92])  # eyes and noses, on a dark animal
PINK = np.array([0.95, 0.6, 0.65])  # the cat's inner ears and nose
CAT_EYES = np.array([0.55, 0.8, 0.2])
CAT_EAR = [(0.74, 0.0), (0.62, -1.0), (0.1, -0.4)]  # the right ear's corners, in units of u
CAT_INNER_EAR = [(0.6, -0.12), (0.58, -0.78), (0.28, -0.4)]


class Placement(NamedTuple):
    """Where an object goes: class name, centre (cx, cy) and size (2u) in pixels."""

    name: str
    cx: float
    cy: float
    size: float


def pixel_grid(height: int, width: int) -> Grid:
    """The centres of all pixels: ys, xs each (H, W), pixel (row r, column c) at (r + 0.5, c + 0.5)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return ys, xs


# ----- primitives: boolean masks (H, W) -----
def ellipse(grid: Grid, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """An ellipse with radii (rx, ry), turned by `angle` radians (clockwise on screen: y points down)."""
    ys, xs = grid
    dx, dy = xs - cx, ys - cy
    along = dx * np.cos(angle) + dy * np.sin(angle)  # coordinates in the ellipse's own axes
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    return (along / rx) ** 2 + (across / ry) ** 2 <= 1


def polygon(grid: Grid, points: list[tuple[float, float]]) -> np.ndarray:
    """A convex polygon through `points` [(x, y), ...], in either winding order."""
    ys, xs = grid
    left = np.ones(xs.shape, dtype=bool)
    right = np.ones(xs.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        cross = (x2 - x1) * (ys - y1) - (y2 - y1) * (xs - x1)  # > 0: the pixel is left of the edge
        left &= cross >= 0
        right &= cross <= 0
    return left | right  # inside a convex polygon = on the same side of every edge


def segment(grid: Grid, start: tuple[float, float], end: tuple[float, float], half_width: float) -> np.ndarray:
    """A line from `start` to `end` (x, y), `half_width` pixels to each side."""
    ys, xs = grid
    (x1, y1), (x2, y2) = start, end
    t = ((xs - x1) * (x2 - x1) + (ys - y1) * (y2 - y1)) / ((x2 - x1) ** 2 + (y2 - y1) ** 2)
    t = t.clip(0, 1)  # the nearest point of the segment, as a share of its length
    return (xs - x1 - t * (x2 - x1)) ** 2 + (ys - y1 - t * (y2 - y1)) ** 2 <= half_width**2


# ----- the five objects: lists of layers, in painting order -----
def square(grid: Grid, cx: float, cy: float, size: float, colour: np.ndarray) -> list[Layer]:
    ys, xs = grid
    u = size / 2
    return [((np.abs(xs - cx) <= u) & (np.abs(ys - cy) <= u), colour)]


def circle(grid: Grid, cx: float, cy: float, size: float, colour: np.ndarray) -> list[Layer]:
    return [(ellipse(grid, cx, cy, size / 2, size / 2), colour)]


def triangle(grid: Grid, cx: float, cy: float, size: float, colour: np.ndarray) -> list[Layer]:
    u = size / 2
    return [(polygon(grid, [(cx, cy - u), (cx + u, cy + u), (cx - u, cy + u)]), colour)]  # point up


def dog(grid: Grid, cx: float, cy: float, size: float, colour: np.ndarray) -> list[Layer]:
    """A dog's face: floppy ears hanging beside a long head, a pale muzzle, a nose and two eyes."""
    u = size / 2
    ink = features_colour(colour)
    ears = [
        (ellipse(grid, cx + side * 0.66 * u, cy + 0.12 * u, 0.24 * u, 0.58 * u, angle=side * -0.3), colour * 0.6)
        for side in (-1, 1)
    ]  # drawn first: the head covers their roots
    head = [
        (ellipse(grid, cx, cy, 0.6 * u, 0.72 * u), colour),
        (ellipse(grid, cx, cy + 0.42 * u, 0.36 * u, 0.28 * u), 0.45 * colour + 0.55),  # muzzle, paler
        (ellipse(grid, cx, cy + 0.3 * u, 0.14 * u, 0.1 * u), ink),
    ]  # nose
    eyes = [(ellipse(grid, cx + side * 0.26 * u, cy - 0.14 * u, 0.1 * u, 0.1 * u), ink) for side in (-1, 1)]
    return ears + head + eyes


def cat(grid: Grid, cx: float, cy: float, size: float, colour: np.ndarray) -> list[Layer]:
    """A cat's face: pointed ears on a round head, green eyes with slit pupils, a pink nose, whiskers."""
    u = size / 2
    ink = features_colour(colour)
    layers = []
    for side in (-1, 1):  # the ears, as (x, y) in units of u from the centre; side -1 mirrors the right ear
        for corners, ear_colour in ((CAT_EAR, colour), (CAT_INNER_EAR, PINK)):
            layers.append((polygon(grid, [(cx + side * x * u, cy + y * u) for x, y in corners]), ear_colour))
    head = ellipse(grid, cx, cy + 0.2 * u, 0.78 * u, 0.62 * u)
    layers.append((head, colour))
    for side in (-1, 1):
        eye_x = cx + side * 0.32 * u
        layers += [
            (ellipse(grid, eye_x, cy + 0.06 * u, 0.14 * u, 0.16 * u), CAT_EYES),
            (ellipse(grid, eye_x, cy + 0.06 * u, 0.045 * u, 0.14 * u), DARK),
        ]  # slit pupil
        for end_y in (0.34, 0.56):  # whiskers stay on the face: they would be hair-thin bits of mask outside it
            layers.append(
                (
                    head
                    & segment(
                        grid,
                        (cx + side * 0.2 * u, cy + 0.46 * u),
                        (cx + side * 0.78 * u, cy + end_y * u),
                        max(0.5, 0.03 * u),
                    ),
                    ink,
                )
            )
    layers.append(
        (polygon(grid, [(cx - 0.1 * u, cy + 0.3 * u), (cx + 0.1 * u, cy + 0.3 * u), (cx, cy + 0.42 * u)]), PINK)
    )
    return layers


DRAWINGS: dict[str, Callable[..., list[Layer]]] = {
    "square": square,
    "circle": circle,
    "triangle": triangle,
    "dog": dog,
    "cat": cat,
}


# ----- colours, background, painting -----
def features_colour(colour: np.ndarray) -> np.ndarray:
    """Eyes and nose that stand out: dark on a light animal, light on a dark one."""
    luminance = colour @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights
    return DARK if luminance > 0.35 else LIGHT


def contrasting_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A random colour at least MIN_CONTRAST from every colour in `avoid` (the background and the objects
    drawn before), so that no object melts into what lies behind it."""
    while True:  # each try succeeds with probability over 1/3 for up to 5 colours to avoid
        colour = rng.uniform(0, 1, 3)
        if all(np.linalg.norm(colour - other) >= MIN_CONTRAST for other in avoid):
            return colour


def random_background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain, gently graded or gently noisy background: (H, W, 3) floats and its mean colour (3,)."""
    base = rng.uniform(0.05, 0.95, 3)
    kind = rng.integers(3)
    image = np.broadcast_to(base, (height, width, 3)).copy()
    if kind == 1:  # a linear gradient in a random direction, brightness within +- GRADIENT / 2
        ys, xs = pixel_grid(height, width)
        angle = rng.uniform(0, 2 * np.pi)
        along = xs * np.cos(angle) + ys * np.sin(angle)
        ramp = (along - along.mean()) / max(np.ptp(along), 1e-6)  # (H, W) in [-0.5, 0.5]
        image += GRADIENT * ramp[..., None]
    elif kind == 2:
        image += rng.normal(0, NOISE, image.shape)
    return image.clip(0, 1), base


def paint(background: np.ndarray, objects: list[list[Layer]]) -> tuple[np.ndarray, np.ndarray]:
    """Paint `objects` in order over `background` (H, W, 3) floats; later objects occlude earlier ones.

    Returns:
        image uint8 (H, W, 3), exactly round(255 * colour), and the visible masks bool (n, H, W): each
        object's silhouette minus the pixels of the objects painted after it (all False if hidden).
    """
    image = background.copy()
    visible = np.zeros((len(objects), *background.shape[:2]), dtype=bool)
    for i, layers in enumerate(objects):
        for mask, colour in layers:
            image[mask] = colour
            visible[i] |= mask  # the silhouette: the union of the layers
        visible[:i] &= ~visible[i]  # what this object covers is no longer visible below it
    return np.round(image.clip(0, 1) * 255).astype(np.uint8), visible


def draw_scene(
    rng: np.random.Generator, height: int, width: int, placements: list[Placement]
) -> tuple[np.ndarray, np.ndarray]:
    """A random background with the objects at `placements`, each in a contrasting random colour.

    Returns image uint8 (H, W, 3) and visible masks bool (n, H, W), as paint() does.
    """
    background, background_colour = random_background(rng, height, width)
    grid = pixel_grid(height, width)
    colours = [background_colour]
    objects = []
    for name, cx, cy, size in placements:
        colours.append(contrasting_colour(rng, colours))
        objects.append(DRAWINGS[name](grid, cx, cy, size, colours[-1]))
    return paint(background, objects)
