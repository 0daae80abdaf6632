"""What a notebook does differently while nbgrader autogrades it (AUTOGRADING=1 in its kernel's environment).

    if autograding(): ...                         # e.g. evaluate on 20 held-out scenes instead of 100
    recipe = recipe_for_notebooks()               # the course's recipe, or QUICK when autograding
    trace = loop.train(recipe=recipe)

Autograding runs every learner's notebook of a class on the instructor's machine, so a lesson's training
must take seconds there, not minutes, and nothing a learner wrote is saved there
(grading.save_component). The autograding pipeline sets the variable (nbgrader_steps.AUTOGRADING_ENV).
"""

import os

from mrcnn_course.training.recipe import Recipe

# Under autograding a lesson's training: 2 epochs of 4 steps on 64-px scenes, 8 validation scenes
QUICK = dict(epochs=2, images_per_epoch=16, val_images=8, shown_images=2, batch_size=4, image_size=64)


def autograding() -> bool:
    """Whether this process runs under nbgrader autograding (AUTOGRADING=1)."""
    return os.environ.get("AUTOGRADING") == "1"


def recipe_for_notebooks(**overrides) -> Recipe:
    """The recipe a lesson trains with: the default (with `overrides`), or, when AUTOGRADING=1, the QUICK
    one (2 short epochs of 64-px scenes) so that grading a class stays fast."""
    return Recipe(**{**overrides, **QUICK}) if autograding() else Recipe(**overrides)
