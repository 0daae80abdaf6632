"""scenes: the primitives, painting with occlusion, the dog and the cat, colours and backgrounds."""

import numpy as np
import pytest

from mrcnn_course.training import scenes


def runs(row: np.ndarray) -> int:
    """How many separate stretches of True a boolean row holds."""
    padded = np.concatenate([[False], row, [False]])
    return int((padded[1:] & ~padded[:-1]).sum())


def silhouette(layers: list) -> np.ndarray:
    return np.logical_or.reduce([mask for mask, _ in layers])


GRID = scenes.pixel_grid(64, 80)  # (H, W) = (64, 80): rows and columns must not be mixed up
GREY = np.array([0.5, 0.5, 0.5])


def test_pixel_grid_gives_pixel_centres():
    ys, xs = GRID
    assert ys.shape == xs.shape == (64, 80)
    assert (ys[0, 0], xs[0, 0]) == (0.5, 0.5)
    assert (ys[63, 79], xs[63, 79]) == (63.5, 79.5)


def test_primitives_cover_the_pixels_whose_centres_lie_inside():
    disk = scenes.ellipse(GRID, 40, 30, 10, 10)
    assert abs(disk.sum() - np.pi * 100) < 15  # 314 px, give or take the edge
    tall = scenes.ellipse(GRID, 40, 30, 4, 12)
    assert np.ptp(np.where(tall)[0]) > np.ptp(np.where(tall)[1])  # taller than wide
    turned = scenes.ellipse(GRID, 40, 30, 4, 12, angle=np.pi / 2)  # a quarter turn: wider than tall
    assert np.ptp(np.where(turned)[0]) < np.ptp(np.where(turned)[1])
    points = [(10.0, 10.0), (30.0, 10.0), (10.0, 30.0)]
    assert np.array_equal(scenes.polygon(GRID, points), scenes.polygon(GRID, points[::-1]))  # either winding
    assert scenes.polygon(GRID, points).sum() == pytest.approx(200, abs=25)  # half of 20 x 20
    line = scenes.segment(GRID, (10, 5), (50, 5), half_width=1)
    assert set(np.where(line)[0]) == {4, 5} and np.where(line)[1].min() == 9  # rows 4.5 and 5.5 lie within 1


@pytest.mark.parametrize("name", list(scenes.DRAWINGS))
def test_every_drawing_fits_in_its_size_square(name):
    layers = scenes.DRAWINGS[name](GRID, 40, 32, 40, GREY)
    rows, cols = np.where(silhouette(layers))
    assert rows.min() >= 32 - 20 and rows.max() < 32 + 20 and cols.min() >= 40 - 20 and cols.max() < 40 + 20
    assert silhouette(layers).sum() > 0.3 * 40 * 40  # not a speck either


def test_the_cat_has_two_pointed_ears_and_the_dog_a_round_head_with_hanging_ears():
    cat, dog = (silhouette(scenes.DRAWINGS[n](GRID, 40, 32, 48, GREY)) for n in ("cat", "dog"))
    cat_rows, dog_rows = np.where(cat.any(1))[0], np.where(dog.any(1))[0]
    assert runs(cat[cat_rows[0] + 2]) == 2  # the top of the cat is two ear tips...
    assert cat[cat_rows[0] + 2].sum() <= 6  # ...and narrow: pointed
    assert runs(dog[dog_rows[0] + 2]) == 1  # the top of the dog is its head
    widths = dog.sum(1)
    assert np.argmax(widths) > 32  # the dog is widest below its centre: its ears hang down


def test_the_animals_faces_have_features_of_their_own_colours():
    colour = np.array([0.8, 0.6, 0.3])
    cat_colours = {tuple(c) for _, c in scenes.cat(GRID, 40, 32, 48, colour)}
    assert tuple(scenes.PINK) in cat_colours and tuple(scenes.CAT_EYES) in cat_colours
    dog_layers = scenes.dog(GRID, 40, 32, 48, colour)
    assert sum(np.array_equal(c, scenes.DARK) for _, c in dog_layers) == 3  # nose and two eyes, dark on light
    dark_dog = scenes.dog(GRID, 40, 32, 48, np.array([0.1, 0.1, 0.2]))
    assert sum(np.array_equal(c, scenes.LIGHT) for _, c in dark_dog) == 3  # light on dark


def test_paint_lets_later_objects_hide_earlier_ones():
    background = np.zeros((64, 80, 3))
    small = [(scenes.ellipse(GRID, 20, 20, 5, 5), np.array([1.0, 0, 0]))]
    big = [(scenes.ellipse(GRID, 20, 20, 15, 15), np.array([0, 1.0, 0]))]
    partly = [(scenes.ellipse(GRID, 40, 20, 10, 10), np.array([0, 0, 1.0]))]
    image, visible = scenes.paint(background, [small, big, partly])
    assert image.dtype == np.uint8 and image.shape == (64, 80, 3)
    assert not visible[0].any()  # the small disk is fully behind the big one
    assert visible[2].sum() == partly[0][0].sum()  # the last object is whole
    assert 0 < visible[1].sum() < big[0][0].sum()  # the big one lost its right part to the last
    assert not (visible[1] & visible[2]).any()
    assert (image[visible[1]] == [0, 255, 0]).all() and (image[visible[2]] == [0, 0, 255]).all()
    assert (image[~(visible[1] | visible[2])] == 0).all()


def test_contrasting_colour_keeps_its_distance():
    rng = np.random.default_rng(0)
    avoid = [np.array([0.5, 0.5, 0.5])]
    for _ in range(5):
        avoid.append(scenes.contrasting_colour(rng, avoid))
    for i, a in enumerate(avoid):
        for b in avoid[:i]:
            assert np.linalg.norm(a - b) >= scenes.MIN_CONTRAST


def test_backgrounds_are_gentle_and_of_all_three_kinds():
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(30):
        image, base = scenes.random_background(rng, 32, 48)
        assert image.shape == (32, 48, 3) and 0 <= image.min() and image.max() <= 1
        spread = np.ptp(image, axis=(0, 1)).max()
        assert spread <= scenes.GRADIENT + 10 * scenes.NOISE  # no second "object" in the background
        step = np.abs(np.diff(image, axis=1)).max()  # the largest change between neighbours
        kinds.add("plain" if spread == 0 else "graded" if step < 0.02 else "noisy")
    assert kinds == {"plain", "graded", "noisy"}


def test_draw_scene_is_a_function_of_the_generator_state():
    placements = [scenes.Placement("cat", 30, 30, 30), scenes.Placement("square", 50, 30, 20)]
    first = scenes.draw_scene(np.random.default_rng(5), 64, 80, placements)
    second = scenes.draw_scene(np.random.default_rng(5), 64, 80, placements)
    other = scenes.draw_scene(np.random.default_rng(6), 64, 80, placements)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], other[0])  # other colours
    assert np.array_equal(first[1], other[1])  # same shapes
