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

Every implementation of a component takes the same arguments as the package's own function (its
docstring gives the shapes). The functions are listed below, stage by stage, in the order data flows.
"""

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

OWN = "own"
TORCHVISION = "torchvision"


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
        """The package's own implementation, mrcnn_course.<module>.<name>.

        Looked up when needed, not when this table is built: the stage modules call back into this
        module, so importing them here would make the import order matter.
        """
        return getattr(importlib.import_module(f"mrcnn_course.model.{self.module}"), self.name)

    @property
    def torchvision(self) -> Callable | None:
        """torchvision's version with this component's signature, or None if it has none."""
        from mrcnn_course.model import torchvision_ops  # imported on request only: torchvision is optional

        return getattr(torchvision_ops, self.name, None)


_COMPONENTS = [
    Component("resize", "1 input image", "resize by the min/max-size rule, boxes and masks too", "input_image"),
    Component(
        "resize_boxes",
        "1 input image",
        "rescale boxes between image sizes (targets in, detections back)",
        "input_image",
    ),
    Component("batch_images", "1 input image", "pad images into one batch, sides a multiple of 32", "input_image"),
    Component("bottleneck", "2 backbone", "a ResNet bottleneck block's forward pass", "backbone"),
    Component("fpn_top_down", "2 backbone", "FPN merge: lateral 1x1, upsample, add, 3x3; P6", "backbone"),
    Component("cell_anchors", "3 RPN", "the anchors of one location, from sizes and aspect ratios", "rpn"),
    Component("anchor_grid", "3 RPN", "the anchors of every location of one level", "rpn"),
    Component("encode_boxes", "3 RPN", "regression targets from matched boxes and anchors/proposals", "box_ops"),
    Component("decode_boxes", "3 RPN", "apply predicted deltas to anchors/proposals", "box_ops"),
    Component("box_iou", "3 RPN", "IoU of every pair of boxes", "box_ops"),
    Component("clip_boxes_to_image", "3 RPN", "clamp boxes inside the image", "box_ops"),
    Component("remove_small_boxes", "3 RPN", "indices of boxes with both sides >= min_size", "box_ops"),
    Component("nms", "3 RPN", "non-maximum suppression", "box_ops"),
    Component("batched_nms", "3 RPN", "NMS within each category (FPN level or class)", "box_ops"),
    Component("filter_proposals", "3 RPN", "top-k per level, clip, drop small, NMS, keep the best", "rpn"),
    Component("roi_align", "4 RoI Align", "bilinear RoI Align", "roi_align"),
    Component("map_levels", "4 RoI Align", "FPN level of each box (canonical 224 px at level 4)", "roi_align"),
    Component("fastrcnn_loss", "5 box head", "cross-entropy + smooth L1 on the true class's deltas", "box_head"),
    Component(
        "postprocess_detections", "5 box head", "softmax, decode, clip, threshold, NMS per class, top-k", "box_head"
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


def _resolve(name: str, implementation: str | Callable) -> tuple[Callable, str]:
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
    parameters = list(inspect.signature(component.own).parameters)
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


def summary() -> str:
    """A table of every component: stage, name, active implementation, what it does."""
    rows = [("stage", "component", "active", "what it does")]
    rows += [(c.stage, c.name, c.source, c.description) for c in _COMPONENTS]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _forwarder(name: str) -> Callable:
    component = COMPONENTS[name]

    def call(*args, **kwargs):
        return (component.active or component.own)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = f"Calls the active {name!r}: see components.summary() and mrcnn_course.model.{component.module}."
    return call


reset()
# Module-level functions, one per component: components.nms(...) calls the active NMS.
for _name in NAMES:
    globals()[_name] = _forwarder(_name)
