"""The command line (python -m mrcnn_course): help texts, evaluate on scenes and on a COCO folder, clear errors.

`train` itself runs in tests/training/test_loop.py (killed and resumed) and tests/training/test_distributed.py
(torchrun). About 15 s: one tiny training run and three small evaluations.
Also bad input on the command line: a COCO folder of another layout, divergence, Ctrl-C, warnings, every value
of train's options (threads, an empty or unwritable --out, a resume with other epochs), a full disk at the end.
"""

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

import mrcnn_course.__main__ as cli
from mrcnn_course.__main__ import main
from mrcnn_course.training import coco, data
from mrcnn_course.training.checkpoints import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    ResumeNotExact,
    load_checkpoint,
    save_checkpoint,
)
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe
from mrcnn_course.training.training_trace import TrainingTrace

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
    for name in ("box_map", "box_map50", "mask_map", "mask_map50", "recall", "precision"):
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


def test_a_resume_with_as_many_or_fewer_epochs_says_there_is_nothing_to_train(finished_run, capsys):
    before = (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns
    assert main(["train", "--out", str(finished_run), *TWO_EPOCHS_OPTIONS, "--resume"]) == 0
    assert capsys.readouterr().out == (
        f"the run in {finished_run} has trained all its 2 epochs: nothing to train, nothing written (its trace: "
        f"{finished_run / 'trace.json'}); to train longer, start a new run with a larger --epochs in another folder\n"
    )
    assert main(["train", "--out", str(finished_run), *TWO_EPOCHS_OPTIONS, "--resume", "--epochs", "1"]) == 0
    assert capsys.readouterr().out.startswith(
        f"the run in {finished_run} has trained 2 of its 2 epochs; --epochs 1 asks for fewer: nothing to train, "
        f"nothing written"
    )
    assert (finished_run / CHECKPOINT_NAME).stat().st_mtime_ns == before


def test_a_resume_with_more_epochs_says_it_would_change_the_schedule(finished_run, tmp_path, capsys):
    checkpoint = load_checkpoint(finished_run)
    checkpoint["recipe"]["shown_images"] = Recipe().shown_images  # what the command line trains with
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, checkpoint)
    before = path.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path), *TWO_EPOCHS_OPTIONS, "--resume", "--epochs", "3"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"error: the run in {tmp_path} is planned for 2 epochs (its learning-rate schedule ends there) and has "
        f"trained 2; epochs=3 (--epochs 3) would change its schedule: resume with epochs=2 (--epochs 2) to finish "
        f"it, or start a new run of 3 epochs in another folder\n"
    )
    assert path.stat().st_mtime_ns == before
    assert not (tmp_path / LOCK_NAME).exists()  # the refused resume let the folder go


@pytest.mark.parametrize("threads", ["0", "-1", "4096"])
def test_a_thread_count_outside_the_cpus_is_refused(tmp_path, capsys, threads):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "run"), *TWO_EPOCHS_OPTIONS, "--threads", threads])
    assert exit_.value.code == 1
    cpus = len(os.sched_getaffinity(0))
    assert capsys.readouterr().err == (
        f"error: --threads {threads}: choose from 1 to {cpus}, the CPUs this process may use (more threads than "
        f"CPUs only wait on each other)\n"
    )
    assert not (tmp_path / "run").exists()


def test_more_threads_than_cores_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "cpus_available", lambda: 4)  # two cores of two hyper-threads each
    monkeypatch.setattr(cli, "cores_available", lambda: 2)
    (tmp_path / "a_file").write_text("not a folder")  # the run then stops before its first step
    try:
        with pytest.raises(SystemExit):
            main(["train", "--out", str(tmp_path / "a_file" / "run"), *TWO_EPOCHS_OPTIONS, "--threads", "3"])
    finally:
        torch.set_num_threads(1)  # the module's one thread (main set 3)
    err = capsys.readouterr().err
    assert err.startswith(
        "warning: --threads 3 is more than the 2 cores: two threads on one core share it, and training is often "
        "faster with --threads 2\n"
    ), err
    assert f"error: cannot write in the output folder {tmp_path / 'a_file' / 'run'}" in err


def test_an_empty_or_unwritable_output_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", "", *TWO_EPOCHS_OPTIONS])
    assert exit_.value.code == 2
    assert (
        "argument --out: is empty: name a folder for the run's files, e.g. --out runs/first" in capsys.readouterr().err
    )
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anywhere: /sys refuses even root a new file
        read_only = Path("/sys")
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--out", str(read_only), *TWO_EPOCHS_OPTIONS])
    finally:
        (tmp_path / "read_only").chmod(0o755)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"error: cannot write in the output folder {read_only} (Permission denied): choose a folder you can write "
        f"to (--out, out=)\n"
    )


def test_a_full_disk_while_drawing_the_curves_keeps_the_run_and_says_so(tmp_path, capsys, monkeypatch):
    def fill_up_half_way(figure, file, **options):
        file.write(b"\x89PNG half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", fill_up_half_way)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(out), *TWO_EPOCHS_OPTIONS])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: the run is complete ({out / CHECKPOINT_NAME} and {out / 'trace.json'} are written whole), but "
        f"curves.png was not (No space left on device): free some space; the picture only draws the trace: "
        f"show.viz.draw_training_curves(TrainingTrace.load("
    ), err
    assert sorted(path.name for path in out.iterdir()) == [CHECKPOINT_NAME, "trace.json"]  # no half a picture
    assert load_checkpoint(out)["epoch"] == 2 and len(TrainingTrace.load(out / "trace.json").epochs) == 2


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


@pytest.mark.parametrize(
    "signal_number, code, said",
    [(signal.SIGTERM, 143, "terminated (SIGTERM): stopped"), (signal.SIGINT, 130, "interrupted (Ctrl-C): stopped")],
)
def test_a_signal_while_evaluating_stops_with_one_line_and_the_signals_exit_code(
    finished_run, monkeypatch, capsys, signal_number, code, said
):
    from mrcnn_course.training import evaluation

    def stopped_midway(model, dataset):
        os.kill(os.getpid(), signal_number)  # a real signal, delivered to this process's handler
        time.sleep(5)
        raise AssertionError("the signal did not stop the evaluation")

    monkeypatch.setattr(evaluation, "evaluate", stopped_midway)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--checkpoint", str(finished_run), "--images", "1"])
    assert exited.value.code == code
    assert (
        capsys.readouterr().err
        == f"{said}; every file the course writes is replaced whole, so none is left half-written\n"
    )
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone afterwards
