"""Why a training run stops early, and what it says then: a diverged loss, Ctrl-C or SIGTERM, and which
checkpoint survives.

    check_losses(losses, epoch, step, checkpoint_path, 4e-4)  # TrainingDiverged on a NaN, inf or 1e4 loss
    stop = StopSignal(); stop.listen()                        # Ctrl-C or SIGTERM only records the signal ...
    if stop.received: raise interrupted(epoch, step, path, stop.received)  # ... the loop reads between steps
    stop.stop_listening()                                     # (in a finally block)

SIGTERM is what `kill`, a job scheduler or JupyterHub sends to end a process; it is handled like Ctrl-C
(SIGINT), so a run ended either way keeps its last checkpoint whole and says so. The command line exits
with the shell's code for the signal: 128 + its number (130 for Ctrl-C, 143 for SIGTERM).

Every message names what happened and where (the loss, the epoch, the step), which checkpoint is kept,
and a next step that works: resume=True (--resume) continues from the kept checkpoint, and may lower the
learning rate (checkpoints.CHANGEABLE_ON_RESUME); with no checkpoint yet the run starts again.
"""

import math
import signal
import threading
from pathlib import Path
from typing import Any

from mrcnn_course.training.training_trace import TOTAL

# A loss above this has exploded, even if it is still finite: a new small model starts near 5 and a
# trained one is under 1, while a learning rate far too high throws the weights to losses of 1e10 and more
# (1e31 at lr=1e3), which overflow to inf a few steps later.
EXPLODING_LOSS = 1e4


class TrainingDiverged(FloatingPointError):
    """A loss became NaN, infinite or exploded: training stopped, the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training between two steps; the last checkpoint is kept. signal_number: the
    signal that stopped it (the CLI exits with 128 + signal_number: 130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signal_number: int = signal.SIGINT):
        super().__init__(message)
        self.signal_number = int(signal_number)


# what each stop signal is called in the messages
STOP_SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
# Python's own handler of each, put back when the one before training was installed outside Python
PYTHON_DEFAULTS: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


def what_is_kept(checkpoint_path: Path | None, last_good_epoch: int) -> str:
    """Which checkpoint survives a run stopped after `last_good_epoch` complete epochs (0: none yet)."""
    if checkpoint_path is None:
        return "no checkpoint was written (pass out=FOLDER, --out FOLDER, to keep one per epoch)"
    if last_good_epoch == 0:
        return (
            f"no checkpoint was written before it (the first is written after epoch 1); {checkpoint_path.parent} "
            f"holds no run yet, so the same command starts it again"
        )
    return f"the checkpoint of epoch {last_good_epoch} is kept ({checkpoint_path})"


def check_losses(
    losses: dict[str, float], epoch: int, step: int | None, checkpoint_path: Path | None, lower_lr: float
) -> None:
    """Raise TrainingDiverged if a loss is NaN, infinite or above EXPLODING_LOSS.

    losses: {name: value}, TOTAL and its parts (the parts are checked first, so the message names the culprit);
    step: 1-based within `epoch`, or None for the validation losses measured after it; lower_lr: the peak
    learning rate to advise."""
    for name in sorted(losses, key=lambda name: name == TOTAL):
        value = losses[name]
        if math.isfinite(value) and abs(value) <= EXPLODING_LOSS:
            continue
        where = (
            f"at epoch {epoch}, step {step}" if step is not None else f"on the validation images after epoch {epoch}"
        )
        what = f"{value}" if not math.isfinite(value) else f"{value:.3g} (above {EXPLODING_LOSS:g}: exploding)"
        lower = f"{lower_lr:g}"
        if checkpoint_path is not None and epoch > 1:
            advice = f"resume from it with a lower learning rate: --resume --lr {lower} (resume=True, lr={lower})"
        else:
            advice = f"train again with a lower learning rate: --lr {lower} (lr={lower})"
        raise TrainingDiverged(
            f"{name} is {what} {where}: training stopped; {what_is_kept(checkpoint_path, epoch - 1)}. "
            f"Common causes: a learning rate too high ({advice}), or a component that returns NaN "
            f"(see components.summary())."
        )


def interrupted(
    epoch: int, step: int | None, checkpoint_path: Path | None, signal_number: int = signal.SIGINT
) -> TrainingInterrupted:
    """The exception for Ctrl-C (or SIGTERM: signal_number) at `step` of `epoch` (step None: after the epoch,
    its checkpoint written)."""
    if step is None:
        where, kept = f"after epoch {epoch}", what_is_kept(checkpoint_path, epoch)
    else:
        where, kept = f"at epoch {epoch}, step {step}", what_is_kept(checkpoint_path, epoch - 1)
    kept_one = checkpoint_path is not None and (step is None or epoch > 1)
    # Ctrl-C's message keeps its short word: the learner pressed the keys and knows why
    how = "interrupted" if signal_number == signal.SIGINT else STOP_SIGNALS[signal.Signals(signal_number)]
    return TrainingInterrupted(
        f"{how} {where}; {kept}" + ("; resume with --resume (resume=True)" if kept_one else ""), signal_number
    )


class StopSignal:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records which signal came (`received`), so the
    step under way finishes and the loop stops between two steps with nothing half done; a second one stops
    at once, mid-step (a checkpoint is only ever replaced whole, so the last one written is kept). Outside
    the main thread (where Python delivers signals) it does nothing."""

    def __init__(self):
        self.received: int | None = None  # the signal's number, once one came
        self._previous: dict[signal.Signals, Any] = {}  # each signal's handler before listen()

    def listen(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: the user will not wait for the step to end
            raise TrainingInterrupted(
                f"{STOP_SIGNALS[signal.Signals(signum)]} a second time: stopped at once, in the middle of a step; "
                f"the last checkpoint written, if any, is kept whole",
                signum,
            )
        self.received = signum

    def stop_listening(self) -> None:
        for number, previous in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back
            signal.signal(number, previous if previous is not None else PYTHON_DEFAULTS[number])
        self._previous = {}
