"""train(): the trace's figures, reproducibility, resuming a killed run exactly, NaN handling, the recipe.

Tiny runs: 64-px scenes, 8 per epoch in batches of 4, 4 validation scenes. The file takes about a
minute on 2 busy cores (the killed-and-resumed run starts two Python processes).
Also bad input: a save that fails during training names the epoch and the kept checkpoint, on a full
disk simulated and on a real one (a small tmpfs the test mounts; skipped, saying why, where it cannot).
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TWO_EPOCHS

from mrcnn_course.model import components
from mrcnn_course.model.maskrcnn import maskrcnn_small
from mrcnn_course.training import checkpoints, data, loop, training_step
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, OutputFolderError, load_checkpoint
from mrcnn_course.training.loop import train
from mrcnn_course.training.recipe import Recipe, dataset_seed
from mrcnn_course.training.stopping import TrainingDiverged
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, TrainingTrace

TINY = Recipe(epochs=3, images_per_epoch=8, batch_size=4, val_images=4, image_size=64, seed=3)
# the same recipe as command-line options (shown_images keeps its default)
TINY_OPTIONS = (
    "--epochs 3 --images-per-epoch 8 --batch-size 4 --val-images 4 --image-size 64 --seed 3 --no-progress".split()
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: training runs on one thread


def figures(trace: TrainingTrace) -> list[dict]:
    """Everything an epoch records except its time (and the observation, which is derived from the rest)."""
    return [{k: v for k, v in asdict(e).items() if k != "seconds"} for e in trace.epochs]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run with an output folder and both callbacks recorded."""
    out = tmp_path_factory.mktemp("run")
    steps, epochs = [], []
    trace = train(
        recipe=TINY,
        out=out,
        progress=False,
        on_step=steps.append,
        on_epoch=lambda trace, record: epochs.append((len(trace.epochs), record.epoch)),
    )
    return trace, out, steps, epochs


def test_the_trace_records_every_figure_of_every_epoch(run):
    trace, out, _, _ = run
    assert [e.epoch for e in trace.epochs] == [1, 2, 3]
    for record in trace.epochs:
        for losses in (record.train_losses, record.val_losses):
            assert set(losses) == {TOTAL, *LOSS_PARTS}
            assert all(torch.isfinite(torch.tensor(v)) and v >= 0 for v in losses.values())
            assert losses[TOTAL] == pytest.approx(sum(losses[k] for k in LOSS_PARTS))
        for name in ("recall", "precision", "box_map", "box_map50", "mask_map", "mask_map50"):
            assert 0 <= getattr(record, name) <= 1
        assert record.lr > 0 and record.seconds > 0 and record.observation
        assert len(record.predictions) == TINY.val_images  # shown_images (4) of the 4 validation scenes
    assert trace.epochs[0].observation.startswith("first epoch")
    assert trace.epochs[-1].train_losses[TOTAL] < trace.epochs[0].train_losses[TOTAL]  # it learns
    assert trace.class_names == list(data.CLASSES) and trace.seed == 3 and trace.config == TINY.to_dict()
    # the fixed validation images and their ground truth are in the trace, drawable without the dataset
    image, target = data.ShapesDataset(4, 64, dataset_seed(3, 0), TINY.classes)[0]
    assert torch.allclose(trace.image(0), image, atol=1 / 255)
    assert torch.equal(trace.target(0)["labels"], target["labels"])
    assert trace.predictions(3, 0)["masks"].shape[-2:] == (64, 64)
    assert not trace.model.training


def test_callbacks_and_files(run):
    trace, out, steps, epochs = run
    assert [(s.epoch, s.step) for s in steps] == [(e, s) for e in (1, 2, 3) for s in (1, 2)]
    assert all(s.steps == 2 and set(s.losses) == {TOTAL, *LOSS_PARTS} for s in steps)
    assert steps[-1].lr == trace.epochs[-1].lr
    # one cycle: the learning rate rises, then falls
    assert steps[0].lr < max(s.lr for s in steps) == pytest.approx(TINY.lr, rel=0.05) and steps[-1].lr < TINY.lr / 2
    assert epochs == [(1, 1), (2, 2), (3, 3)]  # on_epoch sees the trace with the new record in it
    assert figures(TrainingTrace.load(out / loop.TRACE_NAME)) == figures(trace)
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
    assert checkpoint["epoch"] == 3 and checkpoint["recipe"] == TINY.to_dict()
    assert {"model", "optimizer", "scheduler", "rng", "trace"} <= set(checkpoint)
    assert set(checkpoint["rng"][0]) >= {"torch", "numpy", "python"}


def test_the_same_seed_gives_the_same_trace_and_another_seed_another(run):
    same = train(recipe=TINY, progress=False)
    assert figures(same) == figures(run[0])
    other = train(recipe=TINY, progress=False, seed=4, epochs=1)
    assert other.epochs[0].train_losses != run[0].epochs[0].train_losses


def test_a_killed_run_resumes_to_the_same_trace(run, tmp_path):
    """Kill the command-line run with SIGKILL during epoch 2, resume it: the trace is the uninterrupted one."""
    out = tmp_path / "killed"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}  # one thread, as in this process
    process = subprocess.Popen(
        [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *TINY_OPTIONS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] < TINY.epochs  # it really stopped part-way
    finished = subprocess.run(
        [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *TINY_OPTIONS, "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    resumed = TrainingTrace.load(out / loop.TRACE_NAME)
    assert figures(resumed) == figures(run[0])
    assert (out / "curves.png").stat().st_size > 1000
    assert "| Epoch | Loss | Recall | Precision | Observation |" in finished.stdout


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    poisoned = []

    def mask_loss_that_breaks(*args):
        loss = components.COMPONENTS["maskrcnn_loss"].own(*args)
        return loss * float("nan") if poisoned else loss

    with components.using(maskrcnn_loss=mask_loss_that_breaks), pytest.raises(TrainingDiverged) as error:
        train(recipe=TINY, out=tmp_path, progress=False, on_epoch=lambda trace, record: poisoned.append(1))
    message = str(error.value)
    assert "loss_mask is nan at epoch 2, step 1" in message
    assert f"the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME})" in message
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert len(TrainingTrace.load(tmp_path / loop.TRACE_NAME).epochs) == 1
    assert not torch.are_deterministic_algorithms_enabled()  # train() restored the global setting


def test_an_infinite_loss_without_an_output_folder_says_so():
    def infinite(*args):
        return components.COMPONENTS["fastrcnn_loss"].own(*args)[0] * float("inf"), torch.tensor(0.0)

    with (
        components.using(fastrcnn_loss=infinite),
        pytest.raises(TrainingDiverged, match="loss_classifier is inf at epoch 1, step 1.*no checkpoint was written"),
    ):
        train(recipe=TINY, progress=False)


def test_bad_settings_are_refused_clearly(run, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Recipe(batch_size=0)
    with pytest.raises(ValueError, match="images_per_epoch .3. is less than one batch .8."):
        Recipe(images_per_epoch=3)
    with pytest.raises(ValueError, match="classes .'horse'.: choose from"):
        Recipe(classes=("horse",))
    with pytest.raises(TypeError, match=r"unknown recipe settings \['epoch'\]"):
        train(epoch=3)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        train(recipe=TINY, out=run[1])
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(recipe=TINY, out=tmp_path, resume=True)
    with pytest.raises(
        ValueError, match=f"used another recipe.*'seed': \\({TINY.seed}, 4\\).*only \\['lr'\\] may change"
    ):
        train(recipe=TINY, out=run[1], resume=True, seed=4)


def test_a_step_of_ones_own_trains_like_the_courses(run):
    """train(train_step=...) runs the given step for every batch (lesson 07 passes the learner's); with the
    course's step it is the same run as the default, and the optimizer it receives is a GradientLimit."""
    calls = []

    def my_step(model, optimizer, images, targets):
        calls.append(type(optimizer).__name__)
        return training_step.train_step(model, optimizer, images, targets)

    trace = train(recipe=TINY, progress=False, train_step=my_step)
    assert figures(trace) == figures(run[0])
    assert calls == ["GradientLimit"] * (TINY.epochs * TINY.steps_per_epoch)


@pytest.mark.parametrize("returned, shown", [(None, "NoneType"), ({"total": 1.0}, "'total'")])
def test_a_step_that_returns_the_wrong_thing_is_told_what_to_return(returned, shown):
    with pytest.raises(ValueError, match=f"the training step returned .*{shown}.*it must return a dict with"):
        train(recipe=replace(TINY, epochs=1), progress=False, train_step=lambda *args: returned)


def test_a_time_limit_stops_after_the_epoch_that_would_overrun_it(run):
    stopped = train(recipe=TINY, progress=False, time_limit=1e-3)
    assert [e.epoch for e in stopped.epochs] == [1]
    assert stopped.epochs[0].observation.endswith(
        "Stopped after epoch 1 of 3: another epoch would end past the time limit of 0 s."
    )
    assert figures(stopped)[0]["train_losses"] == figures(run[0])[0]["train_losses"]  # the same epoch 1
    assert len(train(recipe=TINY, progress=False, time_limit=3600).epochs) == 3


def test_the_trace_and_the_checkpoint_record_which_components_ran(run):
    trace, out, _, _ = run
    assert list(trace.components) == list(components.NAMES)
    assert trace.components["nms"] == trace.components["maskrcnn_loss"] == "own"  # training calls the losses
    assert components.NOT_CALLED not in trace.components.values()  # training and validation run every component
    assert TrainingTrace.load(out / "trace.json").components == trace.components
    assert load_checkpoint(out / "checkpoint.pt")["components"] == trace.components


def test_a_failed_save_during_training_names_the_epoch_and_the_kept_checkpoint(tmp_path, monkeypatch):
    real_fsync, saves = os.fsync, []

    def fill_up_at_the_second_save(descriptor):
        saves.append(1)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(checkpoints.os, "fsync", fill_up_at_the_second_save)
    with pytest.raises(OutputFolderError) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False)
    assert f"epoch 2 finished but its checkpoint was not written: cannot write {tmp_path / CHECKPOINT_NAME}" in str(
        error.value
    )
    assert f"the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME}): resume with --resume" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME, loop.TRACE_NAME]  # no checkpoint.pt.tmp


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: float) -> Iterator[Path]:
    """A real filesystem of `megabytes` (a tmpfs mounted at `folder`), unmounted afterwards; the test is
    skipped where this machine does not let it mount one (it needs root, or a user namespace)."""
    folder.mkdir()
    size = f"{int(megabytes * 1024)}k"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a {size} tmpfs here ({mounted.stderr.decode().strip()}): a real full disk needs root"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Write zeros into folder/filler until the disk is full."""
    with open(folder / "filler", "wb") as file:
        with contextlib.suppress(OSError):
            while True:
                file.write(bytes(1 << 16))
                file.flush()
                os.fsync(file.fileno())


def test_a_real_disk_too_small_for_a_checkpoint_is_refused_before_the_first_step(tmp_path):
    steps = []
    with small_disk(tmp_path / "disk", 2) as disk, pytest.raises(OutputFolderError) as error:
        train(recipe=TWO_EPOCHS, out=disk / "run", progress=False, on_step=steps.append)
    assert re.search(r"has \d+ MB free, but a checkpoint needs about \d+ MB: free some space", str(error.value))
    assert steps == []  # nothing trained, so nothing lost


def test_a_real_disk_that_fills_up_keeps_the_last_checkpoint_whole(tmp_path):
    needed = checkpoints.checkpoint_bytes(maskrcnn_small()) / 2**20
    with small_disk(tmp_path / "disk", needed + 4) as disk:
        out = disk / "run"
        with pytest.raises(OutputFolderError) as error:
            train(recipe=TWO_EPOCHS, out=out, progress=False, on_epoch=lambda trace, record: fill(disk))
        assert f"epoch 2 finished but its checkpoint was not written: cannot write {out / CHECKPOINT_NAME}" in str(
            error.value
        )
        assert f"the checkpoint of epoch 1 is kept ({out / CHECKPOINT_NAME})" in str(error.value)
        assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1  # whole: its digest checks
        assert len(TrainingTrace.load(out / loop.TRACE_NAME).epochs) == 1
        assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_tqdm_disable_hides_the_notebook_bar_too(monkeypatch):
    """tqdm.auto's notebook bar passes disable=False to tqdm, which then ignores TQDM_DISABLE: train reads the
    variable itself, so an executed lesson shows no frozen "0%| 0/54"."""
    from tqdm.notebook import tqdm as notebook_bar

    hidden = []

    class Watched(notebook_bar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            hidden.append(self.disable)

    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setattr(loop, "tqdm", Watched)
    train(recipe=replace(TINY, epochs=1), progress=True)
    assert hidden == [True]
