"""The command line (python -m mrcnn_course): help texts, evaluate on scenes and on a COCO folder, clear errors.

`train` itself runs in tests/training/test_loop.py (killed and resumed) and tests/training/test_distributed.py
(torchrun). About 15 s: one tiny training run and three small evaluations.
Also bad input on the command line: a COCO folder of another layout, divergence, Ctrl-C, warnings.
"""

import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from mrcnn_course.__main__ import main
from mrcnn_course.training import coco, data
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, ResumeNotExact
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe

TINY = Recipe(epochs=1, images_per_epoch=4, batch_size=4, val_images=4, shown_images=1, image_size=64)
# conftest.py's TWO_EPOCHS recipe (the finished_run fixture's) as command-line options
TWO_EPOCHS_OPTIONS = (
    "--epochs 2 --images-per-epoch 4 --batch-size 2 --val-images 2 --image-size 64 --seed 2 --no-progress".split()
)


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


class WritesAFile:
    """Unpickled, it writes `marker`: the pickled code a checkpoint handed around could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_evaluate_refuses_a_file_that_would_run_code_without_running_it(tmp_path, capsys):
    marker, path = tmp_path / "code-ran", tmp_path / "my_checkpoint.pt"
    torch.save({"roi_heads.box_predictor.cls_score.weight": WritesAFile(marker)}, path)
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(path)])
    assert exit_.value.code == 1 and not marker.exists()
    message = capsys.readouterr().err
    assert f"error: not a course checkpoint or state_dict: {path} holds a Python object (" in message
    assert "so it was not loaded" in message
    assert "the checkpoint.pt that `python -m mrcnn_course train --out FOLDER` writes" in message


def test_the_command_line_reads_a_coco_folder_of_any_layout(finished_run, tmp_path, capsys):
    coco.export_coco(data.ShapesDataset(2, 64, seed=5), tmp_path / "export")
    (tmp_path / "export" / "images").rename(tmp_path / "export" / "val2017")
    (tmp_path / "export" / "annotations.json").rename(tmp_path / "export" / "instances.json")
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(finished_run), "--coco", str(tmp_path / "export")])
    assert "on the command line --coco-annotations and --coco-images" in capsys.readouterr().err
    checkpoint, folder = str(finished_run), str(tmp_path / "export")
    options = ["--coco", folder, "--coco-annotations", "instances.json", "--coco-images", "val2017"]
    assert main(["evaluate", "--checkpoint", checkpoint, *options]) == 0
    assert "(2 images)" in capsys.readouterr().out


def test_the_command_line_reports_divergence_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "run"), *TWO_EPOCHS_OPTIONS, "--lr", "1000"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "at epoch 1, step" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "curves.png").exists()


def test_resuming_a_finished_run_says_nothing_was_written(finished_run, capsys):
    before = (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns
    assert main(["train", "--out", str(finished_run), *TWO_EPOCHS_OPTIONS, "--resume"]) == 0
    assert "already finished its 2 epochs: nothing trained, nothing written" in capsys.readouterr().out
    assert (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns == before


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_exits_130_with_how_to_resume(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *TWO_EPOCHS_OPTIONS, "--threads", "1"],
        env={**os.environ, "TQDM_DISABLE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert process.returncode == 130, err
    assert re.fullmatch(
        r"interrupted (at epoch 2, step \d|after epoch 1); the checkpoint of epoch 1 is kept \(.*\); resume with "
        r"--resume \(resume=True\)\n",
        err,
    ), err
    assert "Traceback" not in err and not (out / (CHECKPOINT_NAME + ".tmp")).exists()


def test_warnings_on_the_command_line_are_one_line(capsys):
    with warnings.catch_warnings():
        from mrcnn_course.__main__ import show_warning

        show_warning(ResumeNotExact("another thread count"), ResumeNotExact, "loop.py", 1)
    assert capsys.readouterr().err == "warning: another thread count\n"
