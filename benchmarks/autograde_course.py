"""How long nbgrader takes to autograde a class, serially and in parallel, and what 300 learners would take.

    .venv/bin/python benchmarks/autograde_course.py [--learners 2]

In a temporary copy of the course (solutions/ and nbgrader_config.py) it releases every assignment
found in solutions/, hands in the instructor versions (solutions filled in) as the whole course of
each of `--learners` learners, and autogrades the class with mrcnn_course.teaching.course.autograde,
what `make autograde` runs (a fresh kernel per notebook, AUTOGRADING=1, feedback HTML included):
once with JOBS=1, once with JOBS=2, each into a fresh gradebook. It prints the time of each
assignment (JOBS=1), the class's wall time for each, and projects the time of 300 learners on a
16-core machine from the JOBS=2 run. The goal for one learner's whole course is at most 3 minutes
on 2 cores. Exits with 1 if any submission does not get full marks (then the timing means little).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mrcnn_course.teaching import course

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 180  # one learner's whole course, on 2 cores
CLASS_SIZE, CORES = 300, 16  # the projection's class and machine


def _grade(folder: Path, jobs: int) -> tuple[float, list[course.Outcome]]:
    start = time.perf_counter()
    outcomes = course.autograde(folder, jobs=jobs)
    return time.perf_counter() - start, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=2, help="learners in the class, each the whole course")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        serial_folder, parallel_folder = Path(scratch) / "serial", Path(scratch) / "parallel"
        shutil.copytree(ROOT / "solutions", serial_folder / "solutions", ignore=shutil.ignore_patterns(".*"))
        shutil.copy(ROOT / "nbgrader_config.py", serial_folder)
        start = time.perf_counter()
        assignments = course.release(serial_folder)
        release_seconds = time.perf_counter() - start
        for learner in range(1, args.learners + 1):
            for assignment in assignments:
                shutil.copytree(
                    serial_folder / "solutions" / assignment.name,
                    serial_folder / "grading" / "submitted" / f"learner{learner}" / assignment.name,
                )
        # the same class, released and handed in, with a gradebook of its own
        shutil.copytree(serial_folder, parallel_folder, ignore=shutil.ignore_patterns("gradebook.db"))
        serial_seconds, serial = _grade(serial_folder, jobs=1)
        parallel_seconds, parallel = _grade(parallel_folder, jobs=2)

    print(f"\n{'assignment':24} {'seconds':>8}  score   (learner1, JOBS=1)")
    for o in serial:
        if o.learner == "learner1":
            score = f"{o.score:g} / {o.max_score:g}" if o.score is not None else f"FAILED: {o.error}"
            print(f"{o.assignment:24} {o.seconds:8.1f}  {score}")
    learners, submissions = args.learners, len(serial)
    print(f"\nrelease of {len(assignments)} assignments: {release_seconds:.1f} s")
    print(f"class of {learners} learners, {submissions} submissions, on {os.cpu_count()} cores:")
    print(f"  JOBS=1: {serial_seconds:7.1f} s wall ({serial_seconds / learners:.1f} s per learner)")
    print(f"  JOBS=2: {parallel_seconds:7.1f} s wall ({parallel_seconds / learners:.1f} s per learner)")
    per_learner = serial_seconds / learners
    verdict = "within" if per_learner <= GOAL_SECONDS else "OVER"
    print(
        f"one learner's whole course, JOBS=1: {per_learner:.1f} s ({verdict} the goal of {GOAL_SECONDS} s on 2 cores)"
    )
    # core-seconds per learner, measured with every core busy (JOBS=2 here), spread over CORES workers
    core_seconds = parallel_seconds * (os.cpu_count() or 1) / learners
    projected = CLASS_SIZE * core_seconds / CORES
    print(
        f"projected: {CLASS_SIZE} learners on a {CORES}-core machine (make autograde JOBS={CORES}, same speed per "
        f"core): {projected / 60:.0f} min ({projected / 3600:.1f} h); "
        f"on this machine with JOBS=1: {CLASS_SIZE * per_learner / 3600:.1f} h"
    )
    same = [(o.learner, o.assignment, o.score) for o in serial] == [
        (o.learner, o.assignment, o.score) for o in parallel
    ]
    print(f"JOBS=2 gives the grades of JOBS=1: {'yes' if same else 'NO'}")
    for one, two in zip(serial, parallel):  # a busy machine can time a kernel out in one run and not the other
        if one.score != two.score:
            print(f"  {one.learner} {one.assignment}: JOBS=1 {one.score} {one.error} | JOBS=2 {two.score} {two.error}")
    full_marks = all(o.score is not None and o.score == o.max_score for o in serial + parallel)
    return 0 if full_marks and same else 1


if __name__ == "__main__":
    sys.exit(main())
