"""The prediction trace: what each of the six stages took and gave, recorded from the live model.

`model.trace(image)` runs one image with forward hooks on each stage's modules, so the numbers in a
lesson's data-flow card come from the model that actually ran, not from a table typed by hand.
"""

from dataclasses import dataclass, field

from torch import Tensor

from mrcnn_course.model import components


def shape_of(t: Tensor) -> str:
    """ "1x256x50x50" for a Tensor[1, 256, 50, 50]."""
    return "x".join(str(s) for s in t.shape) if t.dim() else "scalar"


@dataclass
class StageRecord:
    """One stage: its number and name, a one-line description, what went in and what came out."""

    number: int
    name: str
    description: str
    inputs: dict[str, str]  # name -> shape, e.g. {"image": "3x800x800"}
    outputs: dict[str, str]
    tensors: dict[str, Tensor] = field(default_factory=dict, repr=False)
    note: str = ""  # where this model differs from the single-scale textbook picture

    def input_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.inputs.items())

    def output_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.outputs.items())


@dataclass
class PredictionTrace:
    """The six StageRecords of one image, and the final detections (in the image's own size)."""

    stages: list[StageRecord]
    detections: dict[str, Tensor]
    # every component: the implementation that ran ("own", "torchvision", where a supplied function was
    # defined) or components.NOT_CALLED; components.summary(trace.components) prints it as a table
    components: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, number: int) -> StageRecord:
        """trace[3] is stage 3, the RPN."""
        return self.stages[number - 1]

    def to_markdown(self) -> str:
        """The data-flow table: stage, input, what it does, output."""
        rows = ["| # | Stage | Input | What it does | Output |", "|---|---|---|---|---|"]
        for s in self.stages:
            note = f" ({s.note})" if s.note else ""
            rows.append(f"| {s.number} | {s.name} | {s.input_text()} | {s.description}{note} | {s.output_text()} |")
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


class _Recorder:
    """Forward hooks that keep each hooked module's inputs and output by name."""

    def __init__(self, modules: dict):
        self.calls: dict[str, tuple] = {}  # name -> (the module's inputs, its output)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, output):
            self.calls[name] = (args, output)

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def record_trace(model, image: Tensor) -> PredictionTrace:
    """Run `image` (Tensor[3, H, W]) through `model` in eval mode and describe each stage."""
    heads = model.roi_heads
    recorder = _Recorder(
        {
            "transform": model.transform,
            "backbone": model.backbone,
            "rpn": model.rpn,
            "box_roi_pool": heads.box_roi_pool,
            "box_predictor": heads.box_predictor,
            "mask_roi_pool": heads.mask_roi_pool,
            "mask_predictor": heads.mask_predictor,
        }
    )
    was_training = model.training
    model.eval()
    try:
        with components.recording() as ran:
            detections = model([image])[0]
        calls = recorder.calls
        batch, features = calls["transform"][1][0], calls["backbone"][1]
        # The proposals' objectness scores: the RPN returns boxes only (as torchvision's), so ask it again.
        scores = model.rpn.propose(batch, features).scores[0]
    finally:
        recorder.remove()
        model.train(was_training)
    proposals = calls["rpn"][1][0][0]
    box_features = calls["box_roi_pool"][1]
    class_logits, box_regression = calls["box_predictor"][1]
    refined = heads.box_coder.decode(box_regression, [proposals])  # (K, C, 4)
    mask_features = calls["mask_roi_pool"][1]
    final_boxes = calls["mask_roi_pool"][0][1][0]  # the detections, in the resized image's pixels
    mask_logits = calls["mask_predictor"][1]
    levels = ", ".join(f"P{i + 2} {shape_of(f)}" for i, f in enumerate(features.values()))
    pooled = "x".join(str(s) for s in box_features.shape[-2:])

    stages = [
        StageRecord(
            1,
            "Input image",
            "normalize, resize (min/max-size rule), pad to a multiple of 32",
            {"image": shape_of(image)},
            {"batch": shape_of(batch.tensors)},
            {"image": image, "batch": batch.tensors},
        ),
        StageRecord(
            2,
            "Backbone CNN",
            "ResNet features C2..C5 merged top-down by the FPN into P2..P6",
            {"batch": shape_of(batch.tensors)},
            {name: shape_of(f) for name, f in zip([f"P{i + 2}" for i in range(len(features))], features.values())},
            {f"P{i + 2}": f for i, f in enumerate(features.values())},
            note=f"FPN: {len(features)} maps ({levels}), not one stride-16 map",
        ),
        StageRecord(
            3,
            "Region Proposal Network",
            "objectness + box deltas per anchor; top-k, NMS -> proposals",
            {"feature maps": f"{len(features)} levels"},
            {"proposals": shape_of(proposals), "objectness": shape_of(scores)},
            {"proposals": proposals, "objectness": scores},
        ),
        StageRecord(
            4,
            "RoI Align",
            "bilinear sampling of each box's FPN level into a fixed grid",
            {"feature maps": "P2..P5", "boxes": shape_of(proposals)},
            {"box features": shape_of(box_features), "mask features": shape_of(mask_features)},
            {"box_features": box_features, "mask_features": mask_features},
            note=f"box head pools {pooled} (FPN), mask head 14x14 on the detections",
        ),
        StageRecord(
            5,
            "Box & classifier head",
            "MLP -> class scores and class-specific box deltas; softmax, decode, per-class NMS",
            {"box features": shape_of(box_features)},
            {
                "class scores": shape_of(class_logits),
                "refined boxes": shape_of(refined),
                "detections": shape_of(final_boxes),
            },
            {"class_logits": class_logits, "refined_boxes": refined, "detections": final_boxes},
        ),
        StageRecord(
            6,
            "Mask head",
            "FCN -> 28x28 mask logits per class; the detected class's mask is pasted into the image",
            {"mask features": shape_of(mask_features)},
            {"mask logits": shape_of(mask_logits), "masks": shape_of(detections["masks"])},
            {"mask_logits": mask_logits, "masks": detections["masks"]},
        ),
    ]
    return PredictionTrace(stages, detections, components.ran_report(ran))
