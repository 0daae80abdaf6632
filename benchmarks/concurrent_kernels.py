"""The capstone's training step with 1, 2 and 4 learners' kernels training at once on 2 CPUs.

    .venv/bin/python benchmarks/concurrent_kernels.py                  # about 10 minutes on 2 quiet cores
    .venv/bin/python benchmarks/concurrent_kernels.py --kernels 1 2 --steps 1 --image-size 64   # a quick check

On a JupyterHub node many learners' kernels share the cores: the normal case for a class. Each kernel here is
a fresh Python process, held to the same --cpus CPUs (its affinity), that trains the capstone's model as the
capstone does (the package's components, the course's recipe, a batch of 8 scenes) for --steps steps after one
untimed step, with torch's thread count set by one of four policies:

    package  what importing the package chooses: distributed.cpus_available() (affinity and cgroup quota)
    one      one thread per kernel (OMP_NUM_THREADS=1)
    share    the CPUs divided among the kernels at once, at least one (what a per-user quota of CPUs / K
             makes cpus_available() choose on a JupyterHub node)
    measured what the capstone's fit_to_budget chooses: the package's count, then budget.choose_threads times
             steps at it and at fewer, in turns, and keeps the fastest (the kernels probe at once, as a
             class would: each while the others work)

For each number of kernels and policy it prints the median seconds per step over the kernels and their steps,
the slowest kernel's, the threads each kernel used and the load average. Run it on a quiet machine: the
kernels are meant to be the only load.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

POLICIES = ("package", "one", "share", "measured")


def worker(steps: int, image_size: int, cpus: int, policy: str) -> None:
    """One kernel: train the capstone's model `steps` timed steps; print {"threads", "seconds"} as JSON."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
    import torch  # after the affinity: torch sizes its thread pool from it

    from mrcnn_course.training import training_step  # imports training.distributed: sets the threads
    from mrcnn_course.training.budget import choose_threads
    from mrcnn_course.training.pretrained import small_model
    from mrcnn_course.training.recipe import Recipe, epoch_scenes, optimizer_for
    from mrcnn_course.training.training_step import GradientLimit, step_batch

    recipe = Recipe(image_size=image_size, images_per_epoch=8 * (steps + 1))
    torch.manual_seed(0)
    model = small_model().train()
    optimizer = GradientLimit(optimizer_for(model, recipe), model.parameters(), recipe.grad_clip)
    dataset, order = epoch_scenes(recipe, 1)
    if policy == "measured":
        first = step_batch(dataset, order, recipe.batch_size, 1)
        choose_threads(lambda: training_step.train_step(model, optimizer, *first))
    seconds = []
    for k in range(1, steps + 2):
        batch = step_batch(dataset, order, recipe.batch_size, k)
        started = time.perf_counter()
        training_step.train_step(model, optimizer, *batch)
        if k > 1:  # the first step pays for memory allocation
            seconds.append(time.perf_counter() - started)
    print(json.dumps({"threads": torch.get_num_threads(), "seconds": seconds}))


def run_at_once(kernels: int, policy: str, args: argparse.Namespace) -> dict:
    """Start `kernels` workers together under `policy`; their step times and threads, and the load after."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if policy == "one":
        env["OMP_NUM_THREADS"] = "1"
    elif policy == "share":
        env["OMP_NUM_THREADS"] = str(max(1, args.cpus // kernels))
    command = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--image-size", str(args.image_size)]
    command += ["--cpus", str(args.cpus), "--policy", policy]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        for _ in range(kernels)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a kernel failed (exit {process.returncode}): {out[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    every = [s for r in results for s in r["seconds"]]
    return {
        "median": statistics.median(every),
        "slowest": max(statistics.median(r["seconds"]) for r in results),
        "threads": sorted({r["threads"] for r in results}),
        "load": load,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 2, 4], help="kernels training at once")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per kernel (after one untimed)")
    parser.add_argument("--image-size", type=int, default=128, help="the scenes' size (the course's: 128)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the kernels share (the first ones)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)  # a worker's
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.image_size, args.cpus, args.policy)
        return 0
    print(f"{args.cpus} CPUs shared, {args.steps} timed steps per kernel, {args.image_size}-px scenes, batch 8")
    print("| kernels | policy | threads per kernel | s per step (median) | slowest kernel | load after |")
    print("|---|---|---|---|---|---|")
    for kernels in args.kernels:
        for policy in args.policies:
            r = run_at_once(kernels, policy, args)
            threads = ", ".join(map(str, r["threads"]))
            print(
                f"| {kernels} | {policy} | {threads} | {r['median']:.2f} | {r['slowest']:.2f} | {r['load']:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
