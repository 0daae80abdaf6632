"""stopping: a diverging run (an exploding learning rate or loss, an infinite validation loss) and Ctrl-C
stop with a message that says what is kept and how to resume, and the advice works.

Tiny runs (conftest.py's TWO_EPOCHS: 64-px scenes, two steps an epoch).
"""

import json
import re
import signal
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


def test_ctrl_c_stops_between_two_steps_and_the_resume_is_exact(finished_run, tmp_path):
    def press_ctrl_c(step):
        if step.epoch == 2 and step.step == 1:
            signal.raise_signal(signal.SIGINT)  # handled: the step has finished, the loop stops after it

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as error:
        train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, on_step=press_ctrl_c)
    assert str(error.value) == (
        f"interrupted at epoch 2, step 1; the checkpoint of epoch 1 is kept ({tmp_path / CHECKPOINT_NAME}); "
        f"resume with --resume (resume=True)"
    )
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C behaves as before once training stops
    assert load_checkpoint(tmp_path)["epoch"] == 1
    resumed = train(recipe=TWO_EPOCHS, out=tmp_path, progress=False, resume=True)
    uninterrupted = TrainingTrace.load(finished_run / loop.TRACE_NAME)
    assert [e.train_losses for e in resumed.epochs] == [e.train_losses for e in uninterrupted.epochs]


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
