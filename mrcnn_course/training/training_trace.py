"""The training trace: what training did, epoch by epoch, in a form a person (or a viewer) can read.

    trace = loop.train(epochs=5)
    print(trace.to_markdown())          # | Epoch | Loss | Recall | Precision | Observation |, a loss bar chart
    trace.save("runs/demo/trace.json")  # plain JSON: the viewer draws everything from it alone
    trace = TrainingTrace.load("runs/demo/trace.json")

Per epoch (EpochRecord): the mean training loss and its five parts, the same on the validation images,
recall and precision at score >= 0.5, box and mask mAP and mAP@0.5 (pycocotools), the learning rate, the time, one
observation in words derived from those figures, and the model's predictions on a few fixed
validation images. The trace also holds those images (PNG, base64) and their ground truth, so a saved
trace shows the predictions without the dataset or the model.

Shapes:
    T detections;  G ground-truth objects;  H, W the image size
Masks are stored as COCO run-length encodings (pycocotools), thresholded at 0.5: a 128x128 mask
takes tens of characters instead of 16 KB.

Traces saved before precision was measured called recall "accuracy": they load with that figure as the
recall and precision None (not measured), and every reader shows it as such.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from mrcnn_course.training.encoding import decode_detections, decode_image

LOSS_PARTS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")
TOTAL = "total"  # the key of the summed loss in train_losses / val_losses
LOSS_NAMES = (TOTAL, *LOSS_PARTS)  # the keys of every loss dict: the sum, then its parts
BAR_WIDTH = 20  # characters of the longest loss bar in to_markdown
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks, 1/8 to 7/8 of a character


@dataclass
class EpochRecord:
    """One epoch's figures. Losses are means over the epoch's steps (train) or images (validation)."""

    epoch: int  # 1-based
    train_losses: dict[str, float]  # TOTAL and the five LOSS_PARTS
    val_losses: dict[str, float]  # the same keys, on the validation images (see validation.validation_losses)
    # evaluation.recall_and_precision on the validation images, at score >= 0.5: the share of the objects
    # found, and the share of the detections that found one (None: a trace saved before it was measured)
    recall: float
    precision: float | None
    box_map: float  # COCO mAP@[.5:.95] of the boxes
    box_map50: float  # COCO mAP at IoU 0.5
    mask_map: float
    mask_map50: float
    lr: float  # the learning rate of the epoch's last step
    seconds: float  # wall time of the epoch: training and evaluation
    observation: str  # one or two sentences derived from the figures (see observe)
    predictions: list[dict]  # per fixed validation image: encode_detections(...) of the model's output


@dataclass
class TrainingTrace:
    """A training run: its EpochRecords, the fixed validation images, the class names, recipe and seed."""

    epochs: list[EpochRecord]
    val_images: list[str]  # fixed validation images, PNG as base64 text (see image)
    class_names: list[str]  # label i is class_names[i]; 0 is background
    config: dict[str, Any]  # the recipe that produced this trace (recipe.Recipe as a dict)
    seed: int
    val_targets: list[dict] = field(default_factory=list)  # ground truth of val_images, encode_detections form
    # which implementation of each component ran in training: "own", "torchvision", where a supplied
    # function was defined, or components.NOT_CALLED (see components.recording)
    components: dict[str, str] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)  # the trained model (not saved to JSON)

    # ----- reading the stored images and predictions back as tensors -----
    def image(self, index: int) -> Tensor:
        """Fixed validation image `index` as float Tensor[3, H, W] in [0, 1]."""
        return decode_image(self.val_images[index])

    def predictions(self, epoch: int, index: int) -> dict[str, Tensor]:
        """The predictions on validation image `index` after `epoch` (1-based): boxes [T, 4], labels [T],
        scores [T], masks uint8 [T, H, W]."""
        return decode_detections(self.epochs[epoch - 1].predictions[index])

    def target(self, index: int) -> dict[str, Tensor]:
        """Ground truth of validation image `index`: boxes [G, 4], labels [G], masks uint8 [G, H, W]."""
        return decode_detections(self.val_targets[index])

    # ----- text -----
    def to_markdown(self) -> str:
        """The table | Epoch | Loss | Recall | Precision | Observation |, the loss drawn as a bar scaled to the
        largest; recall and precision at score >= 0.5 on the validation images."""
        rows = ["| Epoch | Loss | Recall | Precision | Observation |", "|---|---|---|---|---|"]
        largest = max((r.train_losses[TOTAL] for r in self.epochs), default=0.0)
        for r in self.epochs:
            loss = r.train_losses[TOTAL]
            rows.append(
                f"| {r.epoch} | `{loss_bar(loss, largest)}` {loss:.2f} | {r.recall:.2f} | "
                f"{figure_text(r.precision)} | {r.observation} |"
            )
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    # ----- JSON -----
    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("model")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingTrace":
        try:
            epochs = [EpochRecord(**older_record(r)) for r in data["epochs"]]
            return cls(
                epochs,
                data["val_images"],
                data["class_names"],
                data["config"],
                data["seed"],
                data.get("val_targets", []),
                data.get("components", {}),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"not a training trace ({error}): expected the JSON that TrainingTrace.save writes"
            ) from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace as JSON, atomically (a temporary file, then os.replace): a reader never sees
        half a file, even if the run is killed while writing."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        try:
            # allow_nan=False: Infinity and NaN are not JSON (training stops before a loss gets there)
            temporary.write_text(json.dumps(self.to_dict(), allow_nan=False))
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)  # no half-written file left behind
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingTrace":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no training trace at {path}: train first (python -m mrcnn_course train --out ...)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): was it written by TrainingTrace.save?") from None
        return cls.from_dict(data)


def older_record(record: dict) -> dict:
    """A saved epoch record in today's fields: a trace saved before precision was measured called the
    recall "accuracy" (the share of the objects found) and has no precision (None)."""
    if "accuracy" in record and "recall" not in record:
        renamed = {key: value for key, value in record.items() if key != "accuracy"}
        return {**renamed, "recall": record["accuracy"], "precision": None}
    return record


def figure_text(value: float | None, style: str = ".2f") -> str:
    """A figure in [0, 1] as text, "n/a" for one a trace does not hold (precision before it was measured)."""
    return "n/a" if value is None else format(value, style)


def loss_bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A bar of unicode blocks, `width` characters for `largest`, padded to `width` so bars line up."""
    eighths = round(8 * width * value / largest) if largest > 0 else 0
    bar = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")
    return bar.ljust(width)


def observe(record: EpochRecord, previous: EpochRecord | None, fresh_scenes: bool = False) -> str:
    """One or two sentences about this epoch, derived from its figures and the previous epoch's.
    fresh_scenes: training never showed a scene twice, so a rising validation loss is not memorizing."""
    loss = record.train_losses[TOTAL]
    if previous is None:
        largest = max(LOSS_PARTS, key=lambda k: record.train_losses[k])
        return (
            f"first epoch: loss {loss:.2f}, the largest part is {largest}; {record.recall:.0%} of the validation "
            f"objects found (recall), {figure_text(record.precision, '.0%')} of the detections right (precision)."
        )
    before = previous.train_losses[TOTAL]
    change = (loss - before) / before if before else 0.0
    if abs(change) < 0.02:
        notes = [f"loss flat at {loss:.2f}"]
    else:
        notes = [f"loss {'fell' if change < 0 else 'rose'} {abs(change):.0%} ({before:.2f} -> {loss:.2f})"]
    val, val_before = record.val_losses[TOTAL], previous.val_losses[TOTAL]
    if change < -0.02 and val > val_before * 1.02:
        part = max(LOSS_PARTS, key=lambda k: record.val_losses[k] - previous.val_losses[k])
        rose = f"validation loss rose ({part} {previous.val_losses[part]:.2f} -> {record.val_losses[part]:.2f})"
        if not fresh_scenes:
            why = "overfitting?"
        elif part == "loss_box_reg":  # Fast R-CNN's box loss is summed over positive RoIs, divided by all
            why = (
                "not memorizing (every training scene is new): more sampled RoIs are objects now, "
                "and only those carry a box loss"
            )
        else:
            why = "not memorizing (every training scene is new): watch the next epochs"
        notes.append(f"{rose} while training loss fell: {why}")
    # the figure that moved most tells what the model learned this epoch
    moves = {
        "masks sharpening" if record.mask_map50 > previous.mask_map50 else "masks got worse": (
            "mask mAP@0.5",
            previous.mask_map50,
            record.mask_map50,
        ),
        "boxes tighter" if record.box_map > previous.box_map else "boxes looser": (
            "box mAP",
            previous.box_map,
            record.box_map,
        ),
        "finding more objects" if record.recall > previous.recall else "finding fewer objects": (
            "recall",
            previous.recall,
            record.recall,
        ),
    }
    if record.precision is not None and previous.precision is not None:
        better = record.precision > previous.precision
        moves["fewer false detections" if better else "more false detections"] = (
            "precision",
            previous.precision,
            record.precision,
        )
    words, (name, old, new) = max(moves.items(), key=lambda item: abs(item[1][2] - item[1][1]))
    if abs(new - old) >= 0.03:
        notes.append(f"{words}: {name} {old:.2f} -> {new:.2f}")
    elif abs(change) < 0.02:
        notes.append("recall, precision and mAP barely moved: converged, or the learning rate is too low")
    return "; ".join(notes) + "."
