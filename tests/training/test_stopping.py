"""stopping: a diverging run (an exploding learning rate or loss, an infinite validation loss), Ctrl-C and
SIGTERM stop with a message that says what is kept and how to resume, and the advice works.

Tiny runs (conftest.py's TWO_EPOCHS: 64-px scenes, two steps an epoch).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TWO_EPOCHS

from mrcnn_course.model import components
from mrcnn_course.training import loop
from mrcnn_course.training.checkpoints import CHECKPOINT_NAME, load_checkpoint
from mrcnn_course.training.loop import train
from mrcnn_course.training.stopping import TrainingDiverged, TrainingInterrupted, interrupted
from mrcnn_course.training.training_trace import TrainingTrace

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: training runs on one thread


def no_infinity(constant: str):
    raise AssertionError(f"trace.json holds {constant}: not standard JSON")


def test_an_exploding_learning_rate_stops_at_the_first_step_with_advice_that_works(tmp_path):
    with pytest.raises(TrainingDiverged) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, lr=1e3)
    message = str(error.value)
    assert re.search(r"is (inf|nan|[\d.e+]+ \(above 10000: exploding\)) at epoch 1, step \d", message), message
    assert "no checkpoint was written before it (the first is written after epoch 1)" in message
    assert "so the same command starts it again" in message and "--lr 0.004 (lr=0.004)" in message
    assert "pass out=" not in message  # --out was passed
    assert not any(tmp_path.iterdir())  # nothing half written


@pytest.mark.slow
def test_a_loss_that_explodes_in_epoch_2_keeps_epoch_1_and_resumes_at_a_lower_learning_rate(tmp_path):
    exploded = []

    def mask_loss_that_explodes(*args):
        loss = components.COMPONENTS["maskrcnn_loss"].own(*args)
        return loss * 1e6 if exploded else loss

    with components.using(maskrcnn_loss=mask_loss_that_explodes), pytest.raises(TrainingDiverged) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, on_epoch=lambda trace, record: exploded.append(1))
    message = str(error.value)
    assert re.search(r"loss_mask is [\d.e+]+ \(above 10000: exploding\) at epoch 2, step 1", message), message
    assert f"the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME})" in message
    assert "resume from it with a lower learning rate: --resume --lr 0.0004 (resume=True, lr=0.0004)" in message
    json.loads((tmp_path / loop.TRACE_NAME).read_text(), parse_constant=no_infinity)
    # the advice works: the resume at the lower learning rate finishes the run and says what changed
    resumed = train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True, lr=4e-4)
    assert (
        len(resumed.epochs) == 2
        and "Resumed at a peak learning rate of 0.0004 (was 0.004)." in resumed.epochs[1].observation
    )
    assert load_checkpoint(tmp_path)["recipe"]["lr"] == 4e-4
    with pytest.raises(ValueError, match=re.escape("only ['lr'] may change")):
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True, seed=5)


def test_an_infinite_validation_loss_is_caught_too(tmp_path):
    def box_loss_infinite_in_validation(*args):
        losses = components.COMPONENTS["fastrcnn_loss"].own(*args)
        return losses if torch.is_grad_enabled() else (losses[0] * float("inf"), losses[1])

    with components.using(fastrcnn_loss=box_loss_infinite_in_validation), pytest.raises(TrainingDiverged) as error:
        train(recipe=TWO_EPOCHS, progress=False, epochs=1)
    assert (
        "loss_classifier is inf on the validation images after epoch 1: training stopped; no checkpoint was "
        "written (pass out=FOLDER, --out FOLDER, to keep one per epoch)" in str(error.value)
    )


@pytest.mark.parametrize("stop, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_stops_between_two_steps_and_the_resume_is_exact(finished_run, tmp_path, stop, said):
    def send_the_signal(step):
        if step.epoch == 2 and step.step == 1:
            signal.raise_signal(stop)  # handled: the step has finished, the loop stops after it

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, on_step=send_the_signal)
    assert str(error.value) == (
        f"{said} at epoch 2, step 1; the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME}); "
        f"resume with --resume (resume=True)"
    )
    assert error.value.signal_number == stop  # the command line exits with 128 + it
    # Ctrl-C and SIGTERM behave as before once training stops
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == [CHECKPOINT_NAME, loop.TRACE_NAME]  # folder free
    resumed = train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)
    uninterrupted = TrainingTrace.load(finished_run / loop.TRACE_NAME)
    assert [e.train_losses for e in resumed.epochs] == [e.train_losses for e in uninterrupted.epochs]


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint_whole(tmp_path):
    def send_sigterm_twice(step):
        if step.epoch == 2:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # the user will not wait for the step to end

    with pytest.raises(TrainingInterrupted) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, on_step=send_sigterm_twice)
    assert str(error.value) == (
        "terminated (SIGTERM) a second time: stopped at once, in the middle of a step; the last checkpoint "
        "written, if any, is kept whole"
    )
    assert error.value.signal_number == signal.SIGTERM and load_checkpoint(tmp_path)["epoch"] == 1


@pytest.mark.slow
def test_sigterm_on_the_command_line_exits_143_naming_the_kept_checkpoint_and_the_resume_works(tmp_path):
    """A real `python -m mrcnn_course train` process, ended by SIGTERM (what kill, a scheduler or JupyterHub send)."""
    out = tmp_path / "run"
    # 12 steps an epoch: the signal, sent once epoch 1's checkpoint is written, arrives within epoch 2
    options = "--epochs 2 --images-per-epoch 24 --batch-size 2 --val-images 2 --image-size 64 --no-progress"
    command = [sys.executable, "-m", "mrcnn_course", "train", "--out", str(out), *options.split(), "--threads", "1"]
    process = subprocess.Popen(
        command, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err  # 128 + SIGTERM
    assert re.fullmatch(
        rf"terminated \(SIGTERM\) (at epoch 2, step \d+|after epoch 2); the checkpoint of epoch (1|2) is kept "
        rf"\({re.escape(str(out / CHECKPOINT_NAME))}\); resume with --resume \(resume=True\)\n",
        err,
    ), err
    kept = load_checkpoint(out)["epoch"]
    assert f"the checkpoint of epoch {kept} is kept" in err
    assert sorted(path.name for path in out.iterdir()) == [CHECKPOINT_NAME, loop.TRACE_NAME]  # no .tmp, no run.lock
    resumed = subprocess.run(
        [*command, "--resume"], env={**os.environ, "TQDM_DISABLE": "1"}, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out)["epoch"] == 2 and len(TrainingTrace.load(out / loop.TRACE_NAME).epochs) == 2


@pytest.mark.parametrize(
    "epoch, step, out, message",
    [
        (
            1,
            2,
            "runs/x",
            "interrupted at epoch 1, step 2; no checkpoint was written before it (the first is written "
            "after epoch 1); runs/x holds no run yet, so the same command starts it again",
        ),
        (
            1,
            None,
            "runs/x",
            "interrupted after epoch 1; the checkpoint of epoch 1 is kept (runs/x/checkpoint.pt); "
            "resume with --resume (resume=True)",
        ),
        (
            3,
            1,
            None,
            "interrupted at epoch 3, step 1; no checkpoint was written (pass out=FOLDER, --out FOLDER, to "
            "keep one per epoch)",
        ),
    ],
)
def test_what_ctrl_c_says_when_there_is_no_checkpoint_to_resume(epoch, step, out, message):
    assert str(interrupted(epoch, step, Path(out) / CHECKPOINT_NAME if out else None)) == message
