"""widgets.TrainingViewer: built from a trace or its JSON, redrawn by the slider, fed live once per epoch,
and displayed with a static PNG and text of what it shows (static_picture.py)."""

import base64
import io

import pytest
import torch
from PIL import Image

from mrcnn_course.show.widgets import TrainingViewer
from mrcnn_course.training.encoding import encode_detections, encode_image
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, EpochRecord, TrainingTrace


def hand_made_trace(epochs: int = 4) -> TrainingTrace:
    """A TrainingTrace whose figures improve epoch by epoch: two 64x64 validation images, each with a
    square whose predicted box closes in on it."""
    image = torch.full((3, 64, 64), 0.8)
    image[:, 10:40, 10:40] = 0.2
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 10:40] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 40, 40]]), "labels": torch.tensor([1]), "masks": masks}
    records = []
    for epoch in range(1, epochs + 1):
        progress = epoch / epochs
        losses = {part: 1.0 - 0.5 * progress for part in LOSS_PARTS}
        losses[TOTAL] = sum(losses.values())
        prediction = encode_detections(
            {**target, "boxes": target["boxes"] + 10 * (1 - progress), "scores": torch.tensor([progress])}
        )
        records.append(
            EpochRecord(
                epoch,
                losses,
                {k: v * 1.1 for k, v in losses.items()},
                progress,  # recall
                0.75 * progress,  # precision
                progress / 2,
                progress,
                progress / 2,
                progress,
                1e-3,
                2.0,
                f"epoch {epoch} <went well>",
                [prediction, prediction],
            )
        )
    return TrainingTrace(
        records, [encode_image(image)] * 2, ["background", "square"], {}, 0, [encode_detections(target)] * 2
    )


def test_a_saved_trace_opens_at_its_last_epoch(tmp_path):
    path = hand_made_trace(4).save(tmp_path / "trace.json")
    viewer = TrainingViewer.from_json(path)
    assert (viewer.slider.min, viewer.slider.max, viewer.slider.value) == (1, 4, 4)
    assert (viewer.play.min, viewer.play.max) == (1, 4)
    assert (
        "epoch 4 of 4: loss 2.500, recall 1.00, precision 0.75 (score >= 0.5), mask mAP@0.5 1.00"
        in viewer.summary.value
    )
    assert bytes(viewer.curves.value).startswith(b"\x89PNG") and bytes(viewer.predictions.value).startswith(b"\x89PNG")
    assert "epoch 4 &lt;went well&gt;" in viewer.observation.value  # the observation, escaped as HTML


def test_play_and_slider_are_linked_in_the_browser():
    viewer = TrainingViewer(hand_made_trace(3))
    assert viewer.link.source == (viewer.play, "value") and viewer.link.target == (viewer.slider, "value")


def test_moving_the_slider_redraws_curves_predictions_and_observation():
    viewer = TrainingViewer(hand_made_trace(4))
    before = [bytes(viewer.curves.value), bytes(viewer.predictions.value), viewer.observation.value]
    viewer.slider.value = 2
    after = [bytes(viewer.curves.value), bytes(viewer.predictions.value), viewer.observation.value]
    assert all(a != b for a, b in zip(before, after))
    assert "Epoch 2:" in viewer.observation.value and "epoch 2 of 4" in viewer.summary.value


def test_live_viewer_redraws_once_per_epoch_with_the_same_widgets():
    full = hand_made_trace(3)
    viewer = TrainingViewer()
    assert "waiting for the first epoch" in viewer.summary.value and viewer.slider.disabled
    children = list(viewer.children)
    drawn = []
    viewer.curves.observe(lambda change: drawn.append(viewer.slider.value), names="value")
    live = TrainingTrace([], full.val_images, full.class_names, full.config, full.seed, full.val_targets)
    for record in full.epochs:  # what train(..., on_epoch=viewer.on_epoch) does after each epoch
        live.epochs.append(record)
        viewer.on_epoch(live, record)
        assert viewer.slider.value == viewer.slider.max == record.epoch
    assert drawn == [1, 2, 3]  # one redraw per epoch
    assert list(viewer.children) == children and not viewer.slider.disabled


def test_a_missing_trace_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        TrainingViewer.from_json(tmp_path / "nothing.json")


@pytest.mark.slow
def test_viewer_follows_a_real_training_run():
    from mrcnn_course.model.maskrcnn import maskrcnn_small
    from mrcnn_course.training.data import CLASSES
    from mrcnn_course.training.loop import train

    viewer = TrainingViewer()
    shown = []
    viewer.summary.observe(lambda change: shown.append(change["new"]), names="value")
    small = maskrcnn_small(num_classes=len(CLASSES), min_size=64, max_size=64)  # 64-px inputs: 4x less work
    trace = train(
        small,
        epochs=2,
        images_per_epoch=2,
        val_images=1,
        shown_images=1,
        batch_size=2,
        image_size=64,
        progress=False,
        on_epoch=viewer.on_epoch,
    )
    assert viewer.trace is trace and viewer.slider.max == viewer.slider.value == 2
    assert [text.split(":")[0] for text in shown] == ["epoch 1 of 1", "epoch 2 of 2"]  # once per epoch
    assert bytes(viewer.predictions.value).startswith(b"\x89PNG")


def test_a_trace_saved_before_precision_was_measured_shows_it_as_not_measured(tmp_path):
    """Older traces called the recall "accuracy" and hold no precision: they open, saying so."""
    data = hand_made_trace(2).to_dict()
    for record in data["epochs"]:
        record["accuracy"] = record.pop("recall")
        del record["precision"]
    viewer = TrainingViewer(TrainingTrace.from_dict(data))
    assert "recall 1.00, precision n/a (score >= 0.5)" in viewer.summary.value
    assert bytes(viewer.curves.value).startswith(b"\x89PNG")


def size_of(picture: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(picture)).size


def test_the_training_viewer_displays_its_curves_and_predictions_stacked():
    """Where no kernel runs (an executed copy, a feedback HTML), the epoch it shows stays as one PNG."""
    viewer = TrainingViewer(hand_made_trace(3))
    bundle = viewer._repr_mimebundle_()
    curves, predictions = size_of(viewer.curves.value), size_of(viewer.predictions.value)
    assert size_of(base64.b64decode(bundle["image/png"])) == (
        max(curves[0], predictions[0]),
        curves[1] + predictions[1],
    )
    assert (
        bundle["text/plain"].startswith("epoch 3 of 3: loss") and "Epoch 3: epoch 3 <went well>" in bundle["text/plain"]
    )


def test_a_viewer_waiting_for_its_first_epoch_shows_its_words_only():
    bundle = TrainingViewer()._repr_mimebundle_()
    assert "image/png" not in bundle and bundle["text/plain"] == "waiting for the first epoch..."
