"""The swappable core functions of each stage, and which implementation of each is active.

The model never calls a stage's core function directly: it calls `components.<name>(...)`, and this
module forwards the call to the active implementation:

    "own"          the package's implementation (the default)
    "torchvision"  torchvision's op or function (fast C++ kernels for NMS and RoI Align)
    a function     yours, for example from a lesson

    from mrcnn_course.model import components
    print(components.summary())                  # what is active, stage by stage
    components.use("nms", my_nms)                # until reset
    with components.using(nms=my_nms, roi_align="torchvision"):
        model([image])                           # only inside the block
    components.use_torchvision()                 # every component that has a torchvision op
    components.reset()                           # everything back to "own"
    with components.recording() as ran:          # which implementation of each component ran
        model([image])
    print(components.summary(ran))               # ... and which the model never called

Each forwarder (components.nms, ...) has the package's function's real signature and docstring, so
help(components.nms), Shift-Tab and inspect.signature show what to pass. What ran is recorded in
every PredictionTrace (model.trace), TrainingTrace and checkpoint; a component that a model never
calls (the losses, in a model that only detects) is reported as NOT_CALLED rather than as "active".

Every implementation of a component takes the same arguments as the package's own function (its
docstring gives the shapes). The functions are listed below, stage by stage, in the order data flows.
"""

import functools
import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What type checkers and editors see as components.<name>: the package's own function, whose signature and
    # docstring the forwarder copies when it is made (make_forwarders). Never imported at run time.
    from mrcnn_course.model.backbone import fpn_top_down, residual_block  # noqa: F401
    from mrcnn_course.model.box_head import (  # noqa: F401
        fastrcnn_loss,
        fastrcnn_predictor,
        postprocess_detections,
        select_training_samples,
        two_mlp_head,
    )
    from mrcnn_course.model.box_ops import (  # noqa: F401
        batched_nms,
        box_iou,
        clip_boxes_to_image,
        decode_boxes,
        encode_boxes,
        nms,
        remove_small_boxes,
    )
    from mrcnn_course.model.input_image import batch_images, resize, resize_boxes  # noqa: F401
    from mrcnn_course.model.mask_head import (  # noqa: F401
        maskrcnn_heads,
        maskrcnn_loss,
        maskrcnn_predictor,
        paste_masks_in_image,
        project_masks_on_boxes,
    )
    from mrcnn_course.model.matching import match_boxes, sample_balanced  # noqa: F401
    from mrcnn_course.model.roi_align import map_levels, roi_align  # noqa: F401
    from mrcnn_course.model.rpn import anchor_grid, cell_anchors, filter_proposals, rpn_head, rpn_loss  # noqa: F401

OWN = "own"
TORCHVISION = "torchvision"
NOT_CALLED = "not called"  # what a recording says of a component the model never called


@dataclass
class Component:
    """One swappable function: its stage, what it does, and the implementation in use."""

    name: str
    stage: str
    description: str
    module: str  # the stage module (in mrcnn_course) that holds the package's own function, named like the component
    active: Callable | None = None  # None: the package's own
    source: str = OWN  # "own", "torchvision", or where a supplied function was defined

    @property
    def own(self) -> Callable:
        """The package's own implementation, mrcnn_course.model.<module>.<name>.

        Looked up by name when asked for: the stage modules import this module, so it never imports them.
        """
        return getattr(importlib.import_module(f"mrcnn_course.model.{self.module}"), self.name)

    @property
    def torchvision(self) -> Callable | None:
        """torchvision's version with this component's signature, or None if it has none.

        Looked up by name when asked for: torchvision is optional, and torchvision_ops imports the stage modules.
        """
        return getattr(importlib.import_module("mrcnn_course.model.torchvision_ops"), self.name, None)


_COMPONENTS = [
    Component("resize", "1 input image", "resize by the min/max-size rule, boxes and masks too", "input_image"),
    Component(
        "resize_boxes",
        "1 input image",
        "rescale boxes between image sizes (targets in, detections back)",
        "input_image",
    ),
    Component("batch_images", "1 input image", "pad images into one batch, sides a multiple of 32", "input_image"),
    Component("residual_block", "2 backbone", "a ResNet block's forward pass (basic or bottleneck)", "backbone"),
    Component("fpn_top_down", "2 backbone", "FPN merge: lateral 1x1, upsample, add, 3x3; P6", "backbone"),
    Component("cell_anchors", "3 RPN", "the anchors of one location, from sizes and aspect ratios", "rpn"),
    Component("anchor_grid", "3 RPN", "the anchors of every location of one level", "rpn"),
    Component("rpn_head", "3 RPN", "3x3 conv + ReLU, logits and deltas, flattened into anchor order", "rpn"),
    Component("encode_boxes", "3 RPN", "regression targets from matched boxes and anchors/proposals", "box_ops"),
    Component("decode_boxes", "3 RPN", "apply predicted deltas to anchors/proposals", "box_ops"),
    Component("box_iou", "3 RPN", "IoU of every pair of boxes", "box_ops"),
    Component("clip_boxes_to_image", "3 RPN", "clamp boxes inside the image", "box_ops"),
    Component("remove_small_boxes", "3 RPN", "indices of boxes with both sides >= min_size", "box_ops"),
    Component("nms", "3 RPN", "non-maximum suppression", "box_ops"),
    Component("batched_nms", "3 RPN", "NMS within each category (FPN level or class)", "box_ops"),
    Component("filter_proposals", "3 RPN", "top-k per level, clip, drop small, NMS, keep the best", "rpn"),
    Component("match_boxes", "3 RPN", "label each anchor/proposal: best gt index, -1 below, -2 between", "matching"),
    Component("sample_balanced", "3 RPN", "draw a fixed number of positives and negatives per image", "matching"),
    Component("rpn_loss", "3 RPN", "objectness BCE over sampled anchors + smooth L1 over positives", "rpn"),
    Component("roi_align", "4 RoI Align", "bilinear RoI Align", "roi_align"),
    Component("map_levels", "4 RoI Align", "FPN level of each box (canonical 224 px at level 4)", "roi_align"),
    Component(
        "select_training_samples",
        "5 box head",
        "add the gt boxes to the proposals, match, sample RoIs, encode their targets",
        "box_head",
    ),
    Component("two_mlp_head", "5 box head", "TwoMLPHead's forward: flatten, fc6 + ReLU, fc7 + ReLU", "box_head"),
    Component("fastrcnn_predictor", "5 box head", "FastRCNNPredictor's forward: class logits, box deltas", "box_head"),
    Component("fastrcnn_loss", "5 box head", "cross-entropy + smooth L1 on the true class's deltas", "box_head"),
    Component(
        "postprocess_detections", "5 box head", "softmax, decode, clip, threshold, NMS per class, top-k", "box_head"
    ),
    Component("maskrcnn_heads", "6 mask head", "the 3x3 convolutions, each with a ReLU (14x14 kept)", "mask_head"),
    Component(
        "maskrcnn_predictor", "6 mask head", "transposed conv (28x28) and ReLU, per-class 1x1 logits", "mask_head"
    ),
    Component("project_masks_on_boxes", "6 mask head", "mask targets: gt masks RoI-aligned into the RoIs", "mask_head"),
    Component("maskrcnn_loss", "6 mask head", "BCE on the ground-truth class's mask channel", "mask_head"),
    Component("paste_masks_in_image", "6 mask head", "resize 28x28 masks into their boxes at image size", "mask_head"),
]
COMPONENTS: dict[str, Component] = {c.name: c for c in _COMPONENTS}
NAMES = tuple(COMPONENTS)


def _describe(fn: Callable) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _resolve(name: str, implementation: str | Callable) -> tuple[Callable | None, str]:
    if name not in COMPONENTS:
        raise KeyError(f"no component named {name!r}; the components are: {', '.join(NAMES)}")
    component = COMPONENTS[name]
    if implementation == OWN:
        return None, OWN
    if implementation == TORCHVISION:
        fn = component.torchvision
        if fn is None:
            raise ValueError(f"torchvision has no counterpart of {name!r}; use 'own' or a function")
        return fn, TORCHVISION
    if not callable(implementation):
        raise TypeError(
            f"components.use({name!r}, ...) takes 'own', 'torchvision' or a function, "
            f"got {type(implementation).__name__}"
        )
    # the arguments the model passes; a keyword-only one (e.g. a lab switch of the package's own) it never passes
    own_parameters = inspect.signature(component.own).parameters.values()
    parameters = [p.name for p in own_parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    try:
        inspect.signature(implementation).bind(*parameters)  # can it be called the way the model calls it?
    except TypeError:
        raise TypeError(
            f"{_describe(implementation)} takes {inspect.signature(implementation)} but the model calls "
            f"{name}({', '.join(parameters)})"
        ) from None
    except ValueError:  # some builtins have no signature: trust them
        pass
    return implementation, _describe(implementation)


def use(name: str, implementation: str | Callable) -> None:
    """Make `implementation` ("own", "torchvision" or a function) the active `name` until reset()."""
    fn, source = _resolve(name, implementation)
    COMPONENTS[name].active, COMPONENTS[name].source = fn, source


def use_torchvision(names: tuple[str, ...] | None = None) -> None:
    """Switch the named components (all that have a counterpart, by default) to torchvision's."""
    for name in names or NAMES:
        if names or COMPONENTS[name].torchvision is not None:
            use(name, TORCHVISION)


def reset(name: str | None = None) -> None:
    """Back to the package's own implementation: of one component, or of all."""
    for component in [COMPONENTS[name]] if name else _COMPONENTS:
        component.active, component.source = None, OWN


@contextmanager
def using(**implementations: str | Callable) -> Iterator[None]:
    """Within the block, use these implementations (name=implementation); restore afterwards."""
    saved = {name: (COMPONENTS[name].active, COMPONENTS[name].source) for name in implementations if name in COMPONENTS}
    try:
        for name, implementation in implementations.items():
            use(name, implementation)
        yield
    finally:
        for name, (fn, source) in saved.items():
            COMPONENTS[name].active, COMPONENTS[name].source = fn, source


def active(name: str) -> str:
    """Which implementation of `name` is active: "own", "torchvision" or the supplied function's name."""
    return COMPONENTS[name].source


# The open recordings: each maps a component's name to the implementation that ran ("own", "torchvision",
# or where a supplied function was defined), for the components called while it is open.
_recordings: list[dict[str, str]] = []


@contextmanager
def recording() -> Iterator[dict[str, str]]:
    """Record, inside the block, which implementation of each component ran: yields {name: source}, filled
    as components are called (a component never called stays out of it; see ran_report)."""
    ran: dict[str, str] = {}
    _recordings.append(ran)
    try:
        yield ran
    finally:
        _recordings.remove(ran)


def ran_report(ran: dict[str, str]) -> dict[str, str]:
    """Every component, stage by stage: the implementation that ran (from a recording), or NOT_CALLED."""
    return {name: ran.get(name, NOT_CALLED) for name in NAMES}


def summary(ran: dict[str, str] | None = None) -> str:
    """A table of every component: stage, name, the active implementation, what it does; given a
    recording (or a trace's .components), also what ran, and NOT_CALLED for what the model never called."""
    header = ("stage", "component", "active", "ran" if ran is not None else "", "what it does")
    rows = [header] + [
        (c.stage, c.name, c.source, ran.get(c.name, NOT_CALLED) if ran is not None else "", c.description)
        for c in _COMPONENTS
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(r[:4], widths) if w) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _forwarder(component: Component) -> Callable:
    """components.<name>: calls the active implementation, with the package's function's signature and
    docstring (functools.update_wrapper sets __wrapped__, which inspect.signature and help() follow)."""
    own = component.own

    def forward(*args, **kwargs):
        for ran in _recordings:
            ran.setdefault(component.name, component.source)
        return (component.active or own)(*args, **kwargs)

    functools.update_wrapper(forward, own)
    forward.__module__, forward.__qualname__ = __name__, component.name
    forward.__doc__ = (
        f"Calls the active {component.name} (components.active({component.name!r})); the package's own is "
        f"mrcnn_course.model.{component.module}.{component.name}:\n\n{inspect.getdoc(own)}"
    )
    return forward


def __getattr__(name: str) -> Callable[..., Any]:
    """Only for names that are not components (the forwarders are module globals, made below): say which
    names exist."""
    raise AttributeError(f"mrcnn_course.model.components has no {name!r}; the components are: {', '.join(NAMES)}")


def make_forwarders() -> None:
    """Make the module-level functions, one per component: components.nms(...) calls the active NMS.

    Each copies its stage function's signature and docstring, so it needs the stage modules complete; they
    import this module, so this module cannot import them while it is itself imported. The model package
    calls this in its __init__.py, which Python runs before any of the package's modules is imported.
    """
    for component in _COMPONENTS:
        globals()[component.name] = _forwarder(component)


reset()
