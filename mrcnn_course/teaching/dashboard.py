"""The class at a glance: what the gradebook and the autograded notebooks say about a whole class.

    results = read_class(root)      # from grading/gradebook.db (or NBGRADER_DB_URL) and grading/autograded
    figure(results)                 # four panels: scores, pass rates, failed cases, who has not handed in
    save(root)                      # grading/dashboard.png (make dashboard)

demos/class_dashboard.ipynb shows the panels one by one. What each panel counts:
  - scores: each learner's score on each assignment, as a share of its maximum; a submission that
    could not be autograded (a corrupt notebook, a dead kernel) is counted apart as "failed";
  - pass rate of each graded cell (an exercise's check, a quiz question): the share of the
    assignment's submissions that got its full points (a failed submission passes nothing);
  - failed cases: the checkers' "check_nms: case '...' failed." lines in the autograded notebooks,
    counted once per submission: the first case a learner's function got wrong (a checker stops
    there), which is the mistake to explain in class;
  - who has not handed in what: the learners (in the gradebook, or with a folder in
    grading/submitted) against the assignments anyone has handed in. Import the roster
    (`nbgrader db student import roster.csv`) to see the learners who handed in nothing at all.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from nbgrader.api import Gradebook

from mrcnn_course.teaching.course import course_api, find_assignments, subfolders
from mrcnn_course.teaching.grading.core import failed_case

MAX_ROWS = 40  # learners shown in the who-has-not-handed-in grid; the title counts the others
FONT_SIZE = 14  # legible on a projector


@dataclass
class ClassResults:
    assignments: list[str]  # those anyone has handed in, in the course's order
    max_scores: dict[str, float]  # assignment -> its maximum score
    scores: dict[str, dict[str, float | None]]  # assignment -> learner -> score (None: autograding failed)
    pass_rates: dict[tuple[str, str], float]  # (assignment, graded cell) -> share with full points
    failed_cases: Counter  # (exercise, case) -> submissions whose check failed on that case
    missing: dict[str, list[str]]  # learner -> the assignments they have not handed in (only learners missing some)
    learners: list[str]


def read_class(root: Path) -> ClassResults:
    """Read the class's results from the gradebook and grading/autograded (see the module doc)."""
    root = Path(root)
    api = course_api(root)
    order = {a.name: i for i, a in enumerate(find_assignments(root))}
    submitted = Path(api.coursedir.root) / api.coursedir.submitted_directory
    autograded = Path(api.coursedir.root) / api.coursedir.autograded_directory
    scores: dict[str, dict[str, float | None]] = {}
    pass_rates: dict[tuple[str, str], float] = {}
    max_scores: dict[str, float] = {}
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        learners = sorted({s.id for s in gradebook.students} | set(subfolders(submitted)))
        for assignment in gradebook.assignments:
            submissions = assignment.submissions
            if not submissions:
                continue
            max_scores[assignment.name] = assignment.max_score
            scores[assignment.name] = {s.student.id: _score(s) for s in submissions}
            passed = Counter({cell.name: 0 for notebook in assignment.notebooks for cell in notebook.grade_cells})
            for submission in submissions:
                for notebook in submission.notebooks:
                    passed.update(g.name for g in notebook.grades if g.score is not None and g.score == g.max_score)
            pass_rates.update({(assignment.name, cell): n / len(submissions) for cell, n in passed.items()})
    assignments = sorted(scores, key=lambda n: (order.get(n, len(order)), n))
    handed_in = {name: set(scores[name]) for name in assignments}
    for learner in subfolders(submitted):  # handed in, not graded yet
        for name in set(subfolders(submitted / learner)) & set(handed_in):
            handed_in[name].add(learner)
    missing = {
        learner: [name for name in assignments if learner not in handed_in[name]]
        for learner in learners
        if any(learner not in handed_in[name] for name in assignments)
    }
    return ClassResults(
        assignments=assignments,
        max_scores=max_scores,
        scores=scores,
        pass_rates=dict(sorted(pass_rates.items(), key=lambda item: (order.get(item[0][0], len(order)), item[0]))),
        failed_cases=_failed_cases(autograded),
        missing=missing,
        learners=learners,
    )


def _score(submission) -> float | None:
    """The submission's score, or None when autograding never graded one of its cells."""
    if any(g.auto_score is None and g.manual_score is None for nb in submission.notebooks for g in nb.grades):
        return None
    return submission.score


def _failed_cases(autograded: Path) -> Counter:
    """(exercise, case) -> how many autograded submissions failed a check on that case."""
    found: Counter = Counter()
    for path in sorted(autograded.glob("*/*/*.ipynb")):
        cases = set()
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
                for output in cell.get("outputs", []):
                    if output.output_type == "error" and (case := failed_case(output.get("evalue", ""))):
                        cases.add(case)
        found.update(cases)
    return found


def plot_scores(results: ClassResults, ax: Axes) -> Axes:
    """Each assignment's scores as a share of its maximum: a box and every learner as a dot."""
    names = [n for n in results.assignments if results.max_scores[n] > 0]  # lesson 00 grades nothing
    if not names:
        return _nothing_yet(ax)
    shares = [[s / results.max_scores[n] for s in results.scores[n].values() if s is not None] for n in names]
    rows = range(len(names), 0, -1)  # the course's first assignment at the top
    ax.boxplot(shares, positions=list(rows), orientation="horizontal", widths=0.6, showfliers=False)
    for row, share in zip(rows, shares):
        # spread the dots vertically by their rank so that equal scores stay visible
        ax.scatter(share, [row + 0.25 * ((i % 5) - 2) / 2 for i in range(len(share))], s=18, alpha=0.6)
    labels = []
    for name in names:
        failed = sum(s is None for s in results.scores[name].values())
        labels.append(f"{name} ({len(results.scores[name])}" + (f", {failed} failed)" if failed else ")"))
    ax.set_yticks(list(rows), labels)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("score / maximum")
    ax.set_title("Scores per assignment (handed in, failed)")
    return ax


def plot_pass_rates(results: ClassResults, ax: Axes) -> Axes:
    """The share of submissions that got each graded cell's full points, the course's order from the top."""
    items = list(results.pass_rates.items())
    if not items:
        return _nothing_yet(ax)
    rows = range(len(items), 0, -1)
    rates = [rate for _, rate in items]
    ax.barh(list(rows), rates, color=[plt.cm.RdYlGn(rate) for rate in rates])
    ax.set_yticks(list(rows), [f"{assignment} · {cell}" for (assignment, cell), _ in items])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of submissions with full points")
    ax.set_title("Pass rate per exercise and question")
    return ax


def plot_failed_cases(results: ClassResults, ax: Axes, top: int = 10) -> Axes:
    """The checker cases that fail most often, the most frequent at the top."""
    common = results.failed_cases.most_common(top)
    if not common:
        return _nothing_yet(ax, "no checker case failed")
    rows = range(len(common), 0, -1)
    ax.barh(list(rows), [n for _, n in common], color="tab:red")
    ax.set_yticks(list(rows), [f"{exercise}: '{case}'" for (exercise, case), _ in common])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts of submissions
    ax.set_xlabel("submissions that failed this case")
    ax.set_title(f"Checker cases failed most often (top {top})")
    return ax


def plot_missing(results: ClassResults, ax: Axes) -> Axes:
    """A grid: learners who have not handed in something, against the assignments (dark: missing)."""
    if not results.assignments:
        return _nothing_yet(ax)
    learners = sorted(results.missing)[:MAX_ROWS]
    grid = [[name in results.missing[learner] for name in results.assignments] for learner in learners]
    ax.imshow(grid or [[False] * len(results.assignments)], cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(results.assignments)), results.assignments, rotation=60, ha="right")
    ax.set_yticks(range(len(learners)), learners)
    more = len(results.missing) - len(learners)
    ax.set_title(
        f"Not handed in (dark): {len(results.missing)} of {len(results.learners)} learners"
        + (f", {more} more not shown" if more > 0 else "")
    )
    return ax


def _nothing_yet(ax: Axes, text: str = "nothing graded yet: make autograde") -> Axes:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return ax


def panel(plot: Callable[[ClassResults, Axes], Axes], results: ClassResults, height: float = 6) -> Figure:
    """One panel on its own, wide and in large type for a projector: panel(plot_scores, results)."""
    with plt.rc_context({"font.size": FONT_SIZE}):
        fig, ax = plt.subplots(figsize=(14, height), layout="constrained")
        plot(results, ax)
    return fig


def figure(results: ClassResults) -> Figure:
    """The four panels in one figure, sized to be read on a projector."""
    with plt.rc_context({"font.size": FONT_SIZE}):
        fig, axes = plt.subplots(2, 2, figsize=(22, 6 + 0.35 * len(results.pass_rates)), layout="constrained")
        plot_scores(results, axes[0, 0])
        plot_pass_rates(results, axes[0, 1])
        plot_failed_cases(results, axes[1, 0])
        plot_missing(results, axes[1, 1])
    return fig


def save(root: Path) -> Path:
    """grading/dashboard.png: the figure of the class in root's gradebook."""
    api = course_api(Path(root))
    path = (Path(api.coursedir.root) / api.coursedir.submitted_directory).parent / "dashboard.png"
    fig = figure(read_class(Path(root)))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
