"""Teaching with nbgrader from the command line: release, autograde, grades, the exchange, the dashboard.

    python -m mrcnn_course.teaching release     # solutions/ -> lessons/, quizzes/      (make release)
    python -m mrcnn_course.teaching autograde   # grading/submitted -> grades, feedback  (make autograde)
    python -m mrcnn_course.teaching grades      # the gradebook -> grading/grades.csv    (make grades)
    python -m mrcnn_course.teaching exchange-release NAME...  # lessons/, quizzes/ -> nbgrader's exchange
    python -m mrcnn_course.teaching exchange-collect NAME...  # the exchange -> grading/submitted
    python -m mrcnn_course.teaching dashboard   # the gradebook -> grading/dashboard.png   (make dashboard)

Run it from the course's root, where nbgrader_config.py is. course.py does the work (and says how),
dashboard.py draws the dashboard; this module only reads the command line and prints what happened.
"""

import argparse
import sys
from pathlib import Path

from mrcnn_course.teaching import course


def _print_outcomes(outcomes: list[course.Outcome]) -> int:
    """The autograding table; returns how many submissions failed."""
    for o in outcomes:
        status = f"{o.score:g} / {o.max_score:g}" if o.score is not None else "FAILED"
        print(f"{o.learner:20} {o.assignment:24} {status}" + (f"\n    {o.error}" if o.error else ""))
    failed = sum(o.score is None for o in outcomes)
    print(f"{len(outcomes)} submissions, {failed} failed; feedback in grading/feedback/")
    return failed


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write K/N, e.g. 2/3 for the second of three machines") from None


def _chosen_shard(given: tuple[int, int] | None) -> tuple[int, int]:
    """--shard, else the job array's task (course.shard_from_environment), else (1, 1); says which on stderr.
    A --shard that a job array's environment contradicts is a ValueError: in a job array, leave it out."""
    try:
        found = course.shard_from_environment()
    except ValueError:
        if given is None:
            raise
        found = None  # an unusable job array's environment, overruled by --shard
    if found is None:
        return given or (1, 1)
    shard, where = found
    if given is not None and given != shard:
        raise ValueError(
            f"SHARD={given[0]}/{given[1]}, but this is task {shard[0]} of {shard[1]} of a job array ({where}): "
            "leave SHARD out of a job array's script (each task finds its own), or unset the array's variables"
        )
    print(f"grading shard {shard[0]}/{shard[1]} of the class ({where})", file=sys.stderr)
    return shard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_course.teaching", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    release_cmd = commands.add_parser("release", help="regenerate lessons/ and quizzes/ from solutions/")
    release_cmd.add_argument("names", nargs="*", help="assignments to release (default: all)")
    grade_cmd = commands.add_parser("autograde", help="grade grading/submitted and write feedback")
    grade_cmd.add_argument("--learner", action="append", help="only this learner (repeatable)")
    grade_cmd.add_argument("--assignment", action="append", help="only this assignment (repeatable)")
    grade_cmd.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    grade_cmd.add_argument(
        "--shard",
        type=_shard,
        help="K/N: this machine grades the K-th of every N learners (default: a Slurm job array's or a Kubernetes "
        "Indexed Job's task, else 1/1)",
    )
    commands.add_parser("grades", help="write grading/grades.csv from the gradebook")
    for command, what in (("exchange-release", "put into nbgrader's exchange"), ("exchange-collect", "collect")):
        commands.add_parser(command, help=f"{what}: lessons and quizzes alike").add_argument("names", nargs="+")
    commands.add_parser("dashboard", help="draw the class's results into grading/dashboard.png")
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if args.command == "release":
            course.release(root, args.names or None)
        elif args.command == "autograde":
            shard = _chosen_shard(args.shard)
            outcomes = course.autograde(root, args.learner, args.assignment, jobs=args.jobs, shard=shard)
            return 1 if _print_outcomes(outcomes) else 0
        elif args.command == "exchange-release":
            course.exchange_release(root, args.names)
        elif args.command == "exchange-collect":
            course.exchange_collect(root, args.names)
        elif args.command == "dashboard":
            from mrcnn_course.teaching import dashboard  # matplotlib: loaded only for this command

            print(f"wrote {dashboard.save(root)}")
        else:
            print(f"wrote {course.write_grades(root)}")
    except (FileNotFoundError, ValueError, course.NbgraderFailed, course.NothingToGrade) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
