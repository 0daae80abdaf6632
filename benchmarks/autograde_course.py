"""How long autograding takes per learner, and what a class of 300 would take on one 16-core machine.

    .venv/bin/python benchmarks/autograde_course.py                      # 2 learners, the whole course
    .venv/bin/python benchmarks/autograde_course.py --learners 1 --jobs 2 --assignments quiz_00_pipeline 02_backbone

In a temporary copy of the course (solutions/ and nbgrader_config.py) it releases the assignments (every one
in solutions/, or those named), hands in the instructor versions (solutions filled in) as the work of each of
`--learners` learners, and autogrades the class with mrcnn_course.teaching.course.autograde, what `make
autograde` runs (a fresh kernel per notebook, AUTOGRADING=1, the re-check outside the kernel, feedback HTML):
once with JOBS=1, once with JOBS=--jobs, each into a fresh gradebook.

For each run it prints the CPU seconds of one core per learner (this process and every process it waited for:
nbgrader's kernels, the grading workers, the warm runner and its forks; resource.getrusage) and the wall
seconds, with the load average before and after (the machine must be quiet for figures worth keeping). The
grading run's own start (the references, the warm runner) is shared by the class and counted in full here:
per learner it shrinks as the class grows. The projection for CLASS_SIZE learners on CORES cores assumes
`make autograde JOBS=16` keeps every core busy at this machine's speed per core. Exits with 1 if a submission
does not get full marks, or JOBS=--jobs gives other grades than JOBS=1 (then the timing means little).
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mrcnn_course.teaching import course
from mrcnn_course.training.distributed import cpus_available

ROOT = Path(__file__).resolve().parents[1]
GOAL_CPU_SECONDS = 60  # one learner's whole course, in CPU seconds of one core
CLASS_SIZE, CORES, GOAL_MINUTES = 300, 16, 30  # the projection's class and machine, and its goal


@dataclass
class Run:
    jobs: int
    outcomes: list[course.Outcome]
    cpu: float  # seconds of CPU, this process and its children
    wall: float
    load: tuple[float, float]  # 1-minute load average before, after


def _cpu_seconds() -> float:
    """CPU seconds of this process and of the processes it has waited for (and theirs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _grade(folder: Path, jobs: int) -> Run:
    load, cpu, start = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
    outcomes = course.autograde(folder, jobs=jobs)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    return Run(jobs, outcomes, cpu, wall, (load, os.getloadavg()[0]))


def _class(scratch: Path, learners: int, names: list[str] | None) -> tuple[Path, Path, list[course.Assignment]]:
    """Two copies of one class, released and handed in, each with a gradebook of its own."""
    serial_folder, parallel_folder = scratch / "serial", scratch / "parallel"
    shutil.copytree(ROOT / "solutions", serial_folder / "solutions", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "nbgrader_config.py", serial_folder)
    assignments = course.release(serial_folder, names)
    for learner in range(1, learners + 1):
        for assignment in assignments:
            shutil.copytree(
                serial_folder / "solutions" / assignment.name,
                serial_folder / "grading" / "submitted" / f"learner{learner}" / assignment.name,
            )
    shutil.copytree(serial_folder, parallel_folder, ignore=shutil.ignore_patterns("gradebook.db"))
    return serial_folder, parallel_folder, assignments


def _report(run: Run, learners: int) -> None:
    print(
        f"  JOBS={run.jobs}: {run.cpu:7.1f} s CPU ({run.cpu / learners:.1f} s of one core per learner), "
        f"{run.wall:7.1f} s wall ({run.wall / learners:.1f} s per learner); load average {run.load[0]:.2f} before, "
        f"{run.load[1]:.2f} after"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=2, help="learners in the class, each the whole course")
    parser.add_argument("--jobs", type=int, default=2, help="JOBS of the second run (default 2)")
    parser.add_argument("--assignments", nargs="+", help="only these assignments (default: every one)")
    args = parser.parse_args()
    if args.learners < 1 or args.jobs < 1:
        parser.error("--learners and --jobs count from 1")
    with tempfile.TemporaryDirectory() as scratch:
        serial_folder, parallel_folder, assignments = _class(Path(scratch), args.learners, args.assignments)
        serial = _grade(serial_folder, jobs=1)
        parallel = _grade(parallel_folder, jobs=args.jobs)

    print(f"\n{'assignment':24} {'seconds':>8}  score   (learner1, JOBS=1, wall)")
    for o in serial.outcomes:
        if o.learner == "learner1":
            score = f"{o.score:g} / {o.max_score:g}" if o.score is not None else f"FAILED: {o.error}"
            print(f"{o.assignment:24} {o.seconds:8.1f}  {score}")
    learners = args.learners
    print(
        f"\nclass of {learners} learners, {len(serial.outcomes)} submissions ({len(assignments)} assignments each), "
        f"on {cpus_available()} CPUs this process may use:"
    )
    _report(serial, learners)
    _report(parallel, learners)
    per_learner = serial.cpu / learners
    verdict = "within" if per_learner <= GOAL_CPU_SECONDS else "OVER"
    print(f"one learner's course: {per_learner:.1f} s of one core ({verdict} the goal of {GOAL_CPU_SECONDS} s)")
    minutes = CLASS_SIZE * per_learner / CORES / 60
    verdict = "within" if minutes < GOAL_MINUTES else "OVER"
    print(
        f"projected: {CLASS_SIZE} learners on one {CORES}-core machine (make autograde JOBS={CORES}): "
        f"{CLASS_SIZE} x {per_learner:.1f} s / {CORES} cores = {minutes:.1f} min ({verdict} the goal of "
        f"{GOAL_MINUTES} min)"
    )
    same = [(o.learner, o.assignment, o.score) for o in serial.outcomes] == [
        (o.learner, o.assignment, o.score) for o in parallel.outcomes
    ]
    print(f"JOBS={args.jobs} gives the grades of JOBS=1: {'yes' if same else 'NO'}")
    for one, other in zip(serial.outcomes, parallel.outcomes):  # a busy machine can time a kernel out once
        if one.score != other.score:
            print(
                f"  {one.learner} {one.assignment}: JOBS=1 {one.score} {one.error} | other {other.score} {other.error}"
            )
    full_marks = all(o.score is not None and o.score == o.max_score for o in serial.outcomes + parallel.outcomes)
    return 0 if full_marks and same else 1


if __name__ == "__main__":
    sys.exit(main())
