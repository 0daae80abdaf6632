"""The course model's speed against torchvision's, as ratios measured in one process.

    .venv/bin/python benchmarks/vs_torchvision.py [--runs 5] [--quick]

Prints medians of --runs timed runs (after one warm-up), alternating the two sides run by run so that
a load change on the machine hits both alike:
  - eval forward time, course model / torchvision's: R-50-FPN at 800 px and the small configuration,
    with the package's own ops and with torchvision's ops selected (same weights, same image);
  - RoI Align, own / torchvision's op: a 1x256x200x200 map, 1000 boxes, 7x7 and 14x14, sampling ratio 2;
  - NMS, own / torchvision's: 1000 and 4000 random boxes.
Goals: own ops <= 1.25x torchvision's model time, torchvision ops <= 1.05x, RoI Align <= 2x.
"""

import argparse
import os
import statistics
import time

import torch
import torchvision

import mrcnn_course
from mrcnn_course.model import box_ops, components, roi_align
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
    print(f"{name:<44} ours {ours * 1000:9.1f} ms   torchvision {theirs * 1000:9.1f} ms   ratio {ratio:5.2f}x{verdict}")


def model_pair(which: str):
    torch.manual_seed(0)
    if which == "R-50-FPN 800px":
        theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        ours = mrcnn_course.maskrcnn_resnet50_fpn()
        image = torch.rand(3, 800, 800)
    else:
        theirs = torchvision_maskrcnn_small(num_classes=6)
        ours = mrcnn_course.maskrcnn_small(num_classes=6)
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


def bench_nms(runs: int) -> None:
    g = torch.Generator().manual_seed(1)
    for n in (1000, 4000):
        xy = torch.rand(n, 2, generator=g) * 800
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 200 + 1], dim=1)
        scores = torch.rand(n, generator=g)
        t_ours, t_theirs = alternate(
            lambda: box_ops.nms(boxes, scores, 0.7), lambda: torchvision.ops.nms(boxes, scores, 0.7), runs
        )
        report(f"NMS, {n} boxes, IoU 0.7", t_ours, t_theirs, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median); at least 5")
    parser.add_argument("--quick", action="store_true", help="skip the R-50-FPN model (a smoke run)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    bench_models(args.runs, args.quick)
    bench_roi_align(args.runs)
    bench_nms(args.runs)


if __name__ == "__main__":
    main()
