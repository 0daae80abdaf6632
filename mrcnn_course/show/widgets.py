"""The training-trace viewer: a training run, epoch by epoch, from a TrainingTrace or its JSON.

    viewer = TrainingViewer.from_json("runs/demo/trace.json")     # a finished run
    viewer                                                          # (the notebook displays it)

    viewer = TrainingViewer()                                       # live: empty until the first epoch
    display(viewer)
    trace = loop.train(..., on_epoch=viewer.on_epoch)               # redraws once per epoch

An epoch slider with a Play button (linked in the browser, so Play runs without the kernel's help),
the loss curve split into its five parts (train and validation) and the recall, precision and mAP curves up to
the chosen epoch, the predictions on the fixed validation images at that epoch, and the epoch's
observation in words. Pictures are PNGs in ipywidgets.Image widgets whose value is replaced: the
widgets are made once and never recreated, so nothing flickers.

The stage explorers are in explorers.py.
"""

import html
import os

import ipywidgets as widgets

from mrcnn_course.show.static_picture import StaticPicture, plain_text
from mrcnn_course.show.viz import draw_epoch_predictions, draw_training_curves, figure_png
from mrcnn_course.training.training_trace import TOTAL, EpochRecord, TrainingTrace, figure_text

PLAY_INTERVAL_MS = 1200  # per epoch: time to read the observation


class TrainingViewer(StaticPicture, widgets.VBox):
    """Epoch slider + Play, a one-line summary, the curves, the predictions, the observation. Displayed,
    it also leaves the epoch it shows as a static PNG and text, for where no kernel runs."""

    def __init__(self, trace: TrainingTrace | None = None, images: int = 3, score_threshold: float = 0.5):
        self.trace = trace
        self.images = images
        self.score_threshold = score_threshold
        self.slider = widgets.IntSlider(value=1, min=1, max=1, description="epoch", continuous_update=False)
        self.play = widgets.Play(value=1, min=1, max=1, interval=PLAY_INTERVAL_MS)
        self.link = widgets.jslink((self.play, "value"), (self.slider, "value"))  # runs in the browser
        self.summary = widgets.HTML()
        natural_size = widgets.Layout(align_self="flex-start")  # a VBox would stretch the PNGs to its width, blurred
        self.curves = widgets.Image(format="png", layout=natural_size)
        self.predictions = widgets.Image(format="png", layout=natural_size)
        self.observation = widgets.HTML()
        super().__init__(
            [widgets.HBox([self.play, self.slider, self.summary]), self.curves, self.predictions, self.observation]
        )
        self.slider.observe(lambda change: self.show_epoch(change["new"]), names="value")
        self._go_to(len(trace.epochs) if trace and trace.epochs else 1)  # a run opens at its end; Play starts over

    @classmethod
    def from_json(cls, path: str | os.PathLike, **kwargs) -> "TrainingViewer":
        """A viewer of the trace saved at `path` (TrainingTrace.save)."""
        return cls(TrainingTrace.load(path), **kwargs)

    def _go_to(self, epoch: int) -> None:
        """Fit the slider and Play to the trace's epochs and show `epoch`, drawing it once."""
        count = len(self.trace.epochs) if self.trace else 0
        for control in (self.slider, self.play):
            control.max = max(count, 1)
            control.disabled = count < 2  # nothing to move between
        if self.slider.value != epoch:
            self.slider.value = epoch  # the slider's observer redraws
        else:
            self.show_epoch(epoch)

    def show_epoch(self, epoch: int) -> None:
        """Redraw every part of the viewer for `epoch` (1-based)."""
        if not self.trace or not self.trace.epochs:
            self.summary.value = "waiting for the first epoch..."
            return
        record = self.trace.epochs[epoch - 1]
        self.curves.value = figure_png(draw_training_curves(self.trace, epoch))
        if self.trace.val_images:
            self.predictions.value = figure_png(
                draw_epoch_predictions(self.trace, epoch, self.images, self.score_threshold)
            )
        self.observation.value = f"<p><b>Epoch {epoch}:</b> {html.escape(record.observation)}</p>"
        # last, so that a browser showing this summary has already received everything above
        self.summary.value = (
            f"epoch {epoch} of {len(self.trace.epochs)}: loss {record.train_losses[TOTAL]:.3f}, "
            f"recall {record.recall:.2f}, precision {figure_text(record.precision)} (score >= 0.5), "
            f"mask mAP@0.5 {record.mask_map50:.2f} "
            f"({record.seconds:.0f} s)"
        )

    def static_pictures(self) -> list[bytes]:
        return [self.curves.value, self.predictions.value]

    def static_text(self) -> str:
        return "\n".join(text for text in (plain_text(self.summary.value), plain_text(self.observation.value)) if text)

    def on_epoch(self, trace: TrainingTrace, record: EpochRecord) -> None:
        """A training callback (train(..., on_epoch=viewer.on_epoch)): take the trace so far and show
        its newest epoch."""
        self.trace = trace
        self._go_to(record.epoch)
