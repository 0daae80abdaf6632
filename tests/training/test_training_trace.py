"""TrainingTrace: the markdown table and its bars, observations from figures, JSON round trips, traces saved
before precision was measured. Also bad input: trace.json stays standard JSON (no Infinity).
"""

from pathlib import Path

import pytest
import torch

from mrcnn_course.training.encoding import decode_detections, decode_image, encode_detections, encode_image
from mrcnn_course.training.training_trace import LOSS_PARTS, TOTAL, EpochRecord, TrainingTrace, loss_bar, observe


def losses(total: float) -> dict[str, float]:
    parts = {k: total / len(LOSS_PARTS) for k in LOSS_PARTS}
    return {TOTAL: total, **parts}


def record(
    epoch: int,
    loss: float,
    val_loss: float,
    recall: float,
    mask_map50: float,
    previous: EpochRecord | None = None,
    precision: float = 0.5,
) -> EpochRecord:
    r = EpochRecord(
        epoch,
        losses(loss),
        losses(val_loss),
        recall,
        precision,
        box_map=recall / 2,
        box_map50=recall,
        mask_map=mask_map50 / 2,
        mask_map50=mask_map50,
        lr=1e-3,
        seconds=1.5,
        observation="",
        predictions=[],
    )
    r.observation = observe(r, previous)
    return r


def story() -> TrainingTrace:
    """The course seed's story: loss 1.2 -> 0.45, recall 0.45 -> 0.85 over five epochs."""
    figures = [
        (1.2, 1.1, 0.45, 0.30),
        (0.9, 0.85, 0.60, 0.55),
        (0.7, 0.68, 0.72, 0.70),
        (0.55, 0.6, 0.80, 0.78),
        (0.45, 0.7, 0.85, 0.80),
    ]
    epochs = []
    for i, f in enumerate(figures):
        epochs.append(record(i + 1, *f, previous=epochs[-1] if epochs else None))
    image = torch.rand(3, 16, 24)
    masks = torch.zeros(1, 1, 16, 24)
    masks[0, 0, 2:9, 3:11] = 0.9
    prediction = {
        "boxes": torch.tensor([[3.0, 2.0, 11.0, 9.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.8765]),
        "masks": masks,
    }
    for r in epochs:
        r.predictions = [encode_detections(prediction)]
    target = {
        "boxes": torch.tensor([[3.0, 2.0, 11.0, 9.0]]),
        "labels": torch.tensor([2]),
        "masks": (masks[:, 0] > 0.5).to(torch.uint8),
    }
    return TrainingTrace(
        epochs, [encode_image(image)], ["background", "a", "b"], {"epochs": 5}, 0, [encode_detections(target)]
    )


def test_markdown_table_has_a_row_per_epoch_with_bars_scaled_to_the_largest_loss():
    text = story().to_markdown()
    lines = text.splitlines()
    assert lines[0] == "| Epoch | Loss | Recall | Precision | Observation |"
    assert len(lines) == 2 + 5
    assert "`" + "█" * 20 + "` 1.20 | 0.45 | 0.50 |" in lines[2]
    assert "`" + "███████▌" + " " * 12 + "` 0.45 | 0.85 | 0.50 |" in lines[6]  # 0.45 / 1.2 * 20 = 7.5 blocks
    print(text)


def test_loss_bar_partial_blocks_and_zero():
    assert loss_bar(1, 8, width=1) == "▏"
    assert loss_bar(0, 0) == " " * 20
    assert loss_bar(3, 4, width=2) == "█▌"


def test_observations_tell_the_story():
    epochs = story().epochs
    assert epochs[0].observation.startswith("first epoch: loss 1.20")
    assert (
        "45% of the validation objects found (recall), 50% of the detections right (precision)" in epochs[0].observation
    )
    assert "loss fell 25% (1.20 -> 0.90)" in epochs[1].observation
    assert "masks sharpening: mask mAP@0.5 0.30 -> 0.55" in epochs[1].observation
    # epoch 5: training loss fell while validation loss rose
    assert (
        "validation loss rose (loss_objectness 0.12 -> 0.14) while training loss fell: overfitting?"
        in epochs[4].observation
    )
    fresh = observe(epochs[4], epochs[3], fresh_scenes=True)
    assert "while training loss fell: not memorizing (every training scene is new)" in fresh


def test_flat_loss_says_so():
    first = record(1, 0.5, 0.5, 0.8, 0.8)
    second = record(2, 0.495, 0.5, 0.8, 0.8, previous=first)
    assert second.observation.startswith("loss flat at 0.49")
    assert "converged" in second.observation


def test_precision_moving_most_is_the_news():
    first = record(1, 0.5, 0.5, 0.8, 0.8, precision=0.4)
    second = record(2, 0.4, 0.4, 0.8, 0.8, previous=first, precision=0.7)
    assert "fewer false detections: precision 0.40 -> 0.70" in second.observation


def test_a_trace_saved_before_precision_was_measured_loads_its_accuracy_as_recall(tmp_path):
    data = story().to_dict()
    for saved in data["epochs"]:  # as the course wrote them before: "accuracy", no precision
        saved["accuracy"] = saved.pop("recall")
        del saved["precision"]
    old = TrainingTrace.from_dict(data)
    assert [r.recall for r in old.epochs] == [r.recall for r in story().epochs]
    assert all(r.precision is None for r in old.epochs)
    assert "| 0.85 | n/a |" in old.to_markdown().splitlines()[6]
    assert TrainingTrace.load(old.save(tmp_path / "trace.json")) == old  # saved again: None stays None
    later = record(6, 0.4, 0.7, 0.9, 0.85, previous=old.epochs[-1])  # a resumed run: precision from now on
    assert "n/a" not in later.observation


def test_json_round_trip(tmp_path):
    trace = story()
    trace.model = object()  # never written
    path = trace.save(tmp_path / "run" / "trace.json")
    loaded = TrainingTrace.load(path)
    assert loaded == trace
    assert loaded.model is None
    assert not list(tmp_path.glob("run/*.tmp"))


def test_images_and_predictions_decode(tmp_path):
    trace = TrainingTrace.load(story().save(tmp_path / "trace.json"))
    image = trace.image(0)
    assert image.shape == (3, 16, 24)
    assert torch.equal(decode_image(encode_image(image)), image)  # exact after one 8-bit quantization
    p = trace.predictions(5, 0)
    assert p["boxes"].tolist() == [[3.0, 2.0, 11.0, 9.0]]
    assert p["labels"].tolist() == [2] and p["scores"].tolist() == [pytest.approx(0.877)]
    assert p["masks"].shape == (1, 16, 24) and p["masks"].dtype == torch.uint8
    assert p["masks"].sum() == 7 * 8 and p["masks"][0, 2:9, 3:11].all()
    assert torch.equal(trace.target(0)["masks"], p["masks"])
    assert "scores" not in trace.target(0)


def test_no_detections_round_trip():
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "masks": torch.zeros(0, 1, 10, 12),
    }
    decoded = decode_detections(encode_detections(empty))
    assert decoded["boxes"].shape == (0, 4) and decoded["masks"].shape == (0, 10, 12)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training trace"):
        TrainingTrace.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainingTrace.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="not a training trace"):
        TrainingTrace.load(tmp_path / "other.json")


def test_trace_json_is_standard_json():
    trace = TrainingTrace([], [], ["background"], {"lr": float("inf")}, 0)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        trace.save(Path("/tmp/never-written-trace.json"))
    assert not Path("/tmp/never-written-trace.json.tmp").exists()
