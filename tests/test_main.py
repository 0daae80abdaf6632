"""The command line (python -m mrcnn_course): help texts, evaluate on scenes and on a COCO folder, clear errors.

`train` itself runs in tests/test_training.py (killed and resumed) and tests/test_distributed.py
(torchrun). About 15 s: one tiny training run and three small evaluations.
"""

import subprocess
import sys

import pytest

from mrcnn_course.__main__ import main
from mrcnn_course.training import coco, data
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe

TINY = Recipe(epochs=1, images_per_epoch=4, batch_size=4, val_images=4, shown_images=1, image_size=64)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: training runs on one thread


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(recipe=TINY, out=out, progress=False)
    return out / "checkpoint.pt"


def test_help_texts_name_every_option():
    result = subprocess.run([sys.executable, "-m", "mrcnn_course", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--out", "--epochs", "--images-per-epoch", "--seed", "--resume", "--lr", "--batch-size"):
        assert option in result.stdout
    assert "(default: 8)" in result.stdout  # defaults come from the recipe
    top = subprocess.run([sys.executable, "-m", "mrcnn_course", "--help"], capture_output=True, text=True).stdout
    assert "train" in top and "evaluate" in top


def test_evaluate_on_generated_scenes(checkpoint, capsys):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--images", "4"]) == 0
    text = capsys.readouterr().out
    assert "on 4 generated validation scenes (4 images)" in text
    for name in ("box_map", "box_map50", "mask_map", "mask_map50", "accuracy"):
        assert name in text
    # the folder works as well as the file
    assert main(["evaluate", "--checkpoint", str(checkpoint.parent), "--images", "2"]) == 0


def test_evaluate_on_a_coco_folder(checkpoint, tmp_path, capsys):
    coco.export_coco(data.ShapesDataset(3, 64, seed=5), tmp_path / "coco")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--coco", str(tmp_path / "coco")]) == 0
    assert f"on the COCO folder {tmp_path / 'coco'} (3 images)" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")])
    assert exit_.value.code == 1
    assert "error: no checkpoint at" in capsys.readouterr().err
    (tmp_path / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(tmp_path / "weights.pt")])
    assert "is not a readable checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train"])  # --out is required
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
