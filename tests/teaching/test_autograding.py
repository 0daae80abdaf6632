"""Under nbgrader autograding (AUTOGRADING=1) a lesson trains the QUICK recipe; otherwise the course's."""

from mrcnn_course.teaching.autograding import QUICK, autograding, recipe_for_notebooks
from mrcnn_course.training.recipe import Recipe


def test_notebooks_train_quickly_under_autograding(monkeypatch):
    monkeypatch.delenv("AUTOGRADING", raising=False)
    assert not autograding() and recipe_for_notebooks(epochs=5) == Recipe(epochs=5)
    monkeypatch.setenv("AUTOGRADING", "1")
    quick = recipe_for_notebooks(epochs=5)
    assert autograding() and quick == Recipe(**QUICK) and quick.epochs * quick.images_per_epoch <= 32


def test_only_autograding_1_means_autograding(monkeypatch):
    for value in ("0", "", "yes"):
        monkeypatch.setenv("AUTOGRADING", value)
        assert not autograding()
