"""The course model's speed against torchvision's, as ratios measured in one process.

    .venv/bin/python benchmarks/vs_torchvision.py [--runs 5] [--quick] [--nms]

Prints medians of --runs timed runs (after one warm-up), alternating the two sides run by run so that
a load change on the machine hits both alike:
  - eval forward time, course model / torchvision's: R-50-FPN at 800 px and the small configuration,
    with the package's own ops and with torchvision's ops selected (same weights, same image);
  - RoI Align, own / torchvision's op: a 1x256x200x200 map, 1000 boxes, 7x7 and 14x14, sampling ratio 2;
  - NMS, own / torchvision's: an RPN level's 300, 1000 and 2000 best proposals (realistic overlap) and a
    capstone training step's image, at the RPN's IoU 0.7, also as CPU time of one thread (steady on a busy machine).
Goals: own ops <= 1.25x torchvision's model time, torchvision ops <= 1.05x, RoI Align <= 2x, NMS <= 1.5x.
"""

import argparse
import contextlib
import os
import statistics
import time

import torch
import torchvision

from mrcnn_course.model import box_ops, components, roi_align, rpn
from mrcnn_course.model.maskrcnn import maskrcnn_resnet50_fpn, maskrcnn_small
from mrcnn_course.model.torchvision_ops import torchvision_maskrcnn_small


def alternate(first, second, runs: int) -> tuple[float, float]:
    """Median seconds of first() and second(), called alternately runs times after a warm-up each."""
    first(), second()
    times_first, times_second = [], []
    for _ in range(runs):
        start = time.perf_counter()
        first()
        times_first.append(time.perf_counter() - start)
        start = time.perf_counter()
        second()
        times_second.append(time.perf_counter() - start)
    return statistics.median(times_first), statistics.median(times_second)


def report(name: str, ours: float, theirs: float, goal: float | None) -> None:
    ratio = ours / theirs
    verdict = "" if goal is None else f"  (goal <= {goal:.2f}x: {'met' if ratio <= goal else 'NOT met'})"
    print(f"{name:<44} ours {ours * 1000:9.2f} ms   torchvision {theirs * 1000:9.2f} ms   ratio {ratio:5.2f}x{verdict}")


def model_pair(which: str):
    torch.manual_seed(0)
    if which == "R-50-FPN 800px":
        theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        ours = maskrcnn_resnet50_fpn()
        image = torch.rand(3, 800, 800)
    else:
        theirs = torchvision_maskrcnn_small(num_classes=6)
        ours = maskrcnn_small(num_classes=6)
        image = torch.rand(3, 128, 128)
    ours.load_state_dict(theirs.state_dict())
    return ours.eval(), theirs.eval(), image


def bench_models(runs: int, quick: bool) -> None:
    for which in ["small 128px"] if quick else ["R-50-FPN 800px", "small 128px"]:
        ours, theirs, image = model_pair(which)
        with torch.no_grad():
            for ops in ("own", "torchvision"):
                names = [n for n in components.NAMES if ops == "own" or components.COMPONENTS[n].torchvision]
                with components.using(**{n: ops for n in names}):
                    t_ours, t_theirs = alternate(lambda: ours([image]), lambda: theirs([image]), runs)
                report(f"model eval, {which}, {ops} ops", t_ours, t_theirs, 1.25 if ops == "own" else 1.05)


def bench_roi_align(runs: int) -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 256, 200, 200, generator=g)
    xy = torch.rand(1000, 2, generator=g) * 700
    boxes = torch.cat([torch.zeros(1000, 1), xy, xy + torch.rand(1000, 2, generator=g) * 300 + 4], dim=1)
    for size in (7, 14):
        t_ours, t_theirs = alternate(
            lambda: roi_align.roi_align(features, boxes, size, 0.25, 2),
            lambda: torchvision.ops.roi_align(features, boxes, size, 0.25, 2),
            runs,
        )
        report(f"RoI Align 1x256x200x200, 1000 boxes, {size}x{size}", t_ours, t_theirs, 2.0)


def rpn_level_proposals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n best decoded anchors of one FPN level, as the RPN hands them to NMS: R-50-FPN's P3 on an 800-px
    image (64-px anchors every 8 px, 3 ratios), objectness high near 6 objects, small regression deltas."""
    g = torch.Generator().manual_seed(seed)
    cell = rpn.cell_anchors((64,), (0.5, 1.0, 2.0))
    anchors = rpn.anchor_grid(cell, (100, 100), (8, 8))  # (30000, 4)
    corner = torch.rand(6, 2, generator=g) * 560
    objects = torch.cat([corner, corner + 40 + torch.rand(6, 2, generator=g) * 260], dim=1)
    logits = 5 * box_ops.box_iou(anchors, objects).max(dim=1).values + 0.5 * torch.randn(len(anchors), generator=g)
    deltas = 0.1 * torch.randn(len(anchors), 4, generator=g)
    boxes = box_ops.clip_boxes_to_image(box_ops.decode_boxes(deltas, anchors, (1.0, 1.0, 1.0, 1.0))[:, 0], (800, 800))
    best = logits.topk(n).indices
    return boxes[best], torch.sigmoid(logits[best])


def bench_nms(runs: int) -> None:
    """Wall time with torch's threads, and CPU time of one thread (what the course's speed cases compare)."""
    from mrcnn_course.teaching.grading import speed

    inputs = [(f"NMS, RPN level, {n} boxes, IoU 0.7", *rpn_level_proposals(n, seed=n)) for n in (300, 1000, 2000)]
    boxes, scores, _ = speed.step_inputs()["nms"].args
    inputs.append((f"NMS, capstone step's image, {len(boxes)} boxes", boxes, scores))
    for name, boxes, scores in inputs:
        assert torch.equal(box_ops.nms(boxes, scores, 0.7), torchvision.ops.nms(boxes, scores, 0.7))
        ours, theirs = alternate(
            lambda: box_ops.nms(boxes, scores, 0.7), lambda: torchvision.ops.nms(boxes, scores, 0.7), runs
        )
        report(name, ours, theirs, 1.5)
        timing = speed.measure(
            lambda b, s, t: torchvision.ops.nms(b, s, t), box_ops.nms, (boxes, scores, 0.7), contextlib.nullcontext
        )
        print(
            f"{'  the same, CPU time of 1 thread':<44} ours {timing.learner * 1000:9.2f} ms   torchvision "
            f"{timing.package * 1000:9.2f} ms   ratio {timing.ratio:5.2f}x  (goal <= 1.50x: "
            f"{'met' if timing.ratio <= 1.5 else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median); at least 5")
    parser.add_argument("--quick", action="store_true", help="skip the R-50-FPN model (a smoke run)")
    parser.add_argument("--nms", action="store_true", help="only NMS")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if not args.nms:
        bench_models(args.runs, args.quick)
        bench_roi_align(args.runs)
    bench_nms(args.runs)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
