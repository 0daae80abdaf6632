"""How long nbgrader takes to autograde one learner's whole course (every lesson and quiz).

    .venv/bin/python benchmarks/autograde_course.py

In a temporary copy of the course (solutions/ and nbgrader_config.py) it releases every assignment
found in solutions/, hands in the instructor versions (solutions filled in) as one learner's work,
and autogrades them with mrcnn_course.teaching.course.autograde, what `make autograde` runs: a fresh kernel
per notebook, AUTOGRADING=1, feedback HTML included. It prints the time of each assignment and the
total; the goal is at most 3 minutes on 2 cores. Exits with 1 if any assignment does not get full
marks (then the timing means little).
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

from mrcnn_course.teaching.course import autograde, release

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 180


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        course = Path(scratch)
        shutil.copytree(ROOT / "solutions", course / "solutions", ignore=shutil.ignore_patterns(".*"))
        shutil.copy(ROOT / "nbgrader_config.py", course)
        start = time.perf_counter()
        assignments = release(course)
        release_seconds = time.perf_counter() - start
        for assignment in assignments:
            shutil.copytree(
                course / "solutions" / assignment.name, course / "grading" / "submitted" / "learner" / assignment.name
            )
        start = time.perf_counter()
        outcomes = autograde(course)
        total = time.perf_counter() - start

    print(f"\n{'assignment':24} {'seconds':>8}  score")
    for o in outcomes:
        score = f"{o.score:g} / {o.max_score:g}" if o.score is not None else f"FAILED: {o.error}"
        print(f"{o.assignment:24} {o.seconds:8.1f}  {score}")
    print(f"\nrelease of {len(assignments)} assignments: {release_seconds:.1f} s")
    verdict = "within" if total <= GOAL_SECONDS else "OVER"
    print(f"autograde + feedback, whole course: {total:.1f} s ({verdict} the goal of {GOAL_SECONDS} s on 2 cores)")
    full_marks = all(o.score is not None and o.score == o.max_score for o in outcomes)
    return 0 if full_marks else 1


if __name__ == "__main__":
    sys.exit(main())
