"""mrcnn_course.teaching.course: the release is what the sources generate, the quizzes are well formed,
and autograding says what it found in grading/submitted and where it looked.

test_release_is_up_to_date regenerates every lesson and quiz with nbgrader in a temporary copy
(10-20 s, more as lessons are added); test_autograding_grades_the_valid_beside_the_broken grades a
quiz with nbgrader (slow); the rest about 6 s (one test runs a quiz in a kernel).
"""

import ast
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from simulated_class import hand_in  # tests/simulated_class.py: a class's hand-ins

from mrcnn_course.teaching import course, nbgrader_steps, quiz
from mrcnn_course.teaching.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
TOPICS = [
    "quiz_00_pipeline",
    "quiz_01_input_image",
    "quiz_02_backbone",
    "quiz_03_rpn",
    "quiz_04_roi_align",
    "quiz_05_box_head",
    "quiz_06_mask_head",
]
SEED_QUESTION = "What does the Region Proposal Network (RPN) do in Mask R-CNN?"
SEED_OPTIONS = [
    "Colors the objects in the image",
    "Extracts edges and textures",
    "Suggests boxes where objects might be",
    "Predicts the object class",
]
QUIZZES = [a.name for a in course.find_assignments(ROOT) if a.kind == "quiz"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under folder by relative path, leaving out hidden folders (.ipynb_checkpoints)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def test_release_is_up_to_date(tmp_path):
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    released = course.release(tmp_path)
    assert {a.name for a in released} == {a.name for a in course.find_assignments(ROOT)}
    for directory in course.RELEASE_DIRECTORIES.values():
        expected, committed = _files(tmp_path / directory), _files(ROOT / directory)
        stale = sorted(set(expected) ^ set(committed)) + sorted(
            f for f in set(expected) & set(committed) if expected[f] != committed[f]
        )
        assert not stale, (
            f"{directory}/ differs from what solutions/ generates: {stale}. Run `make release` and commit the result."
        )


@pytest.mark.parametrize("directory", course.RELEASE_DIRECTORIES.values())
def test_released_notebooks_have_no_outputs(directory):
    for path in sorted((ROOT / directory).glob("*/*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            assert cell.cell_type != "code" or (cell.outputs == [] and cell.execution_count is None), path


def test_find_assignments_reads_names(tmp_path, capsys):
    for name in ("02_backbone", "quiz_02_backbone", "01_input_image", "drafts", ".ipynb_checkpoints"):
        (tmp_path / "solutions" / name).mkdir(parents=True)
    found = course.find_assignments(tmp_path)
    assert [(a.name, a.release_directory) for a in found] == [
        ("01_input_image", "lessons"),
        ("02_backbone", "lessons"),
        ("quiz_02_backbone", "quizzes"),
    ]
    assert "skipped solutions/drafts: an assignment folder is named NN_name" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no solutions/ folder"):
        course.find_assignments(tmp_path / "elsewhere")


def test_release_names_unknown_assignments(tmp_path):
    (tmp_path / "solutions" / "quiz_03_rpn").mkdir(parents=True)
    with pytest.raises(ValueError, match="no assignment quiz_09_x in solutions/; there are: quiz_03_rpn"):
        course.release(tmp_path, ["quiz_09_x"])


def test_commands_report_bad_input_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["grades"]) == 2
    assert "error: no nbgrader_config.py in" in capsys.readouterr().err


# ---- autograding's survey of grading/submitted ---------------------------------------------------

SUBMITTED = "grading/submitted"
ONE_CELL = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])


def _course_folder(root: Path) -> Path:
    """A course with lesson 03_rpn (one notebook) and 90_pair (two), nothing handed in; its submitted folder."""
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for name, notebooks in {"03_rpn": ["03_rpn"], "90_pair": ["90_pair_a", "90_pair_b"]}.items():
        (root / "solutions" / name).mkdir(parents=True)
        for notebook in notebooks:
            nbformat.write(ONE_CELL, root / "solutions" / name / f"{notebook}.ipynb")
    return root / SUBMITTED


def test_the_survey_names_each_path_and_what_to_do(tmp_path):
    submitted = _course_folder(tmp_path)
    hand_in(tmp_path, "ada", "03_rpn", ONE_CELL)  # fine
    (submitted / "ana" / "03_rpn").mkdir(parents=True)
    nbformat.write(ONE_CELL, submitted / "ana" / "03_rpn" / "03_rpn (1).ipynb")  # renamed by a download
    hand_in(tmp_path, "ben", "03_rpn", text="")
    hand_in(tmp_path, "cyd", "03_rpn", text='{"cells": [ this is not JSON')
    hand_in(tmp_path, "dee", "03_rpn", nbformat.v4.new_notebook())
    hand_in(tmp_path, "eve", "quiz_3_rpn", ONE_CELL)  # a folder named after no assignment
    nbformat.write(ONE_CELL, submitted / "eve" / "03_rpn.ipynb")  # the notebook without its folder
    hand_in(tmp_path, "fay", "03_rpn", ONE_CELL)
    nbformat.write(ONE_CELL, submitted / "fay" / "03_rpn" / "copy.ipynb")  # beside the right one
    (submitted / "fay" / "90_pair").mkdir()
    nbformat.write(ONE_CELL, submitted / "fay" / "90_pair" / "90_pair_a.ipynb")  # one of two
    (submitted / "gus" / ".ipynb_checkpoints").mkdir(parents=True)  # nothing but a hidden folder
    (submitted / "ivy" / "90_pair").mkdir(parents=True)  # an empty assignment folder
    (submitted / ".hal" / "03_rpn").mkdir(parents=True)  # a hidden learner
    (submitted / "roster.csv").write_text("ada\n")

    found = course.survey_submissions(
        tmp_path, submitted, course.find_assignments(tmp_path), course.subfolders(submitted)
    )

    assert sorted(found.to_grade) == [
        ("ada", "03_rpn"),
        ("ben", "03_rpn"),
        ("cyd", "03_rpn"),
        ("dee", "03_rpn"),
        ("fay", "03_rpn"),
        ("fay", "90_pair"),
    ], "a broken notebook is still graded: nbgrader fails it for that learner only"
    assert {(o.learner, o.assignment): o.error for o in found.ungradable} == {
        ("ana", "03_rpn"): f"{SUBMITTED}/ana/03_rpn/03_rpn (1).ipynb: expected 03_rpn.ipynb; rename it",
        ("eve", "quiz_3_rpn"): f"no assignment 'quiz_3_rpn' in solutions/: rename the folder {SUBMITTED}/eve/"
        "quiz_3_rpn to an assignment's name (03_rpn?)",
        ("ivy", "90_pair"): f"{SUBMITTED}/ivy/90_pair/: no notebook in it; ivy hands in 90_pair_a.ipynb and "
        "90_pair_b.ipynb",
    }
    assert all(o.score is None for o in found.ungradable)
    assert found.broken == {
        ("ben", "03_rpn"): f"{SUBMITTED}/ben/03_rpn/03_rpn.ipynb: an empty file, so nothing in it can be graded; "
        "ask ben to hand it in again",
        ("cyd", "03_rpn"): f"{SUBMITTED}/cyd/03_rpn/03_rpn.ipynb: not valid JSON (Expecting value: line 1 column 13 "
        "(char 12)), so nothing in it can be graded; ask cyd to hand it in again",
        ("dee", "03_rpn"): f"{SUBMITTED}/dee/03_rpn/03_rpn.ipynb: a notebook without cells, so nothing in it can be "
        "graded; ask dee to hand it in again",
    }
    assert sorted(found.notes) == sorted(
        [
            f"skipped {SUBMITTED}/.hal: hidden, so not a learner's folder; if it holds a learner's work, rename it "
            "to the learner's name",
            f"skipped {SUBMITTED}/roster.csv: a file, not a learner's folder; a learner's work goes in "
            f"{SUBMITTED}/<learner>/<assignment>/",
            f"skipped {SUBMITTED}/eve/03_rpn.ipynb: not in an assignment's folder; move it to "
            f"{SUBMITTED}/eve/03_rpn/03_rpn.ipynb",
            f"{SUBMITTED}/fay/03_rpn/copy.ipynb: not one of the assignment's notebooks (03_rpn.ipynb), so not "
            "graded; delete it if it is a copy",
            f"{SUBMITTED}/fay/90_pair/90_pair_b.ipynb: not handed in, it scores 0; ask fay for it",
            f"skipped {SUBMITTED}/gus/.ipynb_checkpoints: hidden, so not an assignment's folder; if it holds an "
            "assignment's work, rename it to the assignment's name",
            f"{SUBMITTED}/gus/: no assignment's folder in it, nothing graded for gus; their work goes in "
            f"{SUBMITTED}/gus/<assignment>/",
        ]
    )


def test_nothing_handed_in_exits_non_zero_and_names_the_folder(tmp_path, monkeypatch, capsys):
    submitted = _course_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    nothing = (
        f"error: nothing handed in: {SUBMITTED}/ holds no learner's folder. Put each learner's work in "
        f"{SUBMITTED}/<learner>/<assignment>/<notebook>.ipynb (make exchange-collect NAME=..., nbgrader "
        "zip_collect, or by hand), then autograde again\n"
    )
    assert main(["autograde"]) == 2
    assert capsys.readouterr().err == nothing
    (submitted / ".ana").mkdir(parents=True)  # the only learner is hidden: said, then nothing to grade
    assert main(["autograde", "--learner", "ana"]) == 2
    hidden = (
        f"skipped {SUBMITTED}/.ana: hidden, so not a learner's folder; if it holds a learner's work, rename it to "
        "the learner's name"
    )
    assert capsys.readouterr().err == f"{hidden}\n{nothing}"


def test_autograde_lists_the_learners_and_assignments_there_are(tmp_path, monkeypatch, capsys):
    _course_folder(tmp_path)
    hand_in(tmp_path, "ada", "03_rpn", ONE_CELL)
    hand_in(tmp_path, "ben", "03_rpn", ONE_CELL)
    monkeypatch.chdir(tmp_path)
    for argv, error in [
        (["--learner", "anna"], f"no learner anna in {SUBMITTED}/; there are: ada, ben"),
        (["--assignment", "3_rpn"], "no assignment 3_rpn in solutions/; there are: 03_rpn, 90_pair"),
        (
            ["--assignment", "90_pair"],
            f"nothing to grade: no folder named after 90_pair in {SUBMITTED}/ada/, {SUBMITTED}/ben/",
        ),
        (
            ["--shard", "3/3"],
            f"nothing to grade on shard 3/3: {SUBMITTED}/ holds 2 learners (ada, ben), none of them this shard's",
        ),
    ]:
        assert main(["autograde", *argv]) == 2, argv
        assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_autograding_grades_the_valid_beside_the_broken(tmp_path, capsys):
    """With nbgrader: the instructor's quiz gets full marks beside a renamed, an empty and a cell-less one."""
    name = "quiz_00_pipeline"
    shutil.copytree(ROOT / "solutions" / name, tmp_path / "solutions" / name, ignore=shutil.ignore_patterns(".*"))
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    course.release(tmp_path)
    solution = nbformat.read(tmp_path / "solutions" / name / f"{name}.ipynb", 4)
    hand_in(tmp_path, "ada", name, solution)
    hand_in(tmp_path, "ana", name, solution)
    (tmp_path / SUBMITTED / "ana" / name / f"{name}.ipynb").rename(tmp_path / SUBMITTED / "ana" / name / "quiz.ipynb")
    hand_in(tmp_path, "ben", name, text="")
    hand_in(tmp_path, "dee", name, nbformat.v4.new_notebook())
    capsys.readouterr()

    outcomes = {o.learner: o for o in course.autograde(tmp_path)}

    assert outcomes["ada"].score == outcomes["ada"].max_score > 0
    assert outcomes["ana"].score is None
    assert outcomes["ana"].error == f"{SUBMITTED}/ana/{name}/quiz.ipynb: expected {name}.ipynb; rename it"
    # nbgrader fails both (recorded in the gradebook); the survey's line comes first, nbgrader's words after
    empty = f"{SUBMITTED}/ben/{name}/{name}.ipynb: an empty file, so nothing in it can be graded; ask ben to hand it in"
    no_cells = f"{SUBMITTED}/dee/{name}/{name}.ipynb: a notebook without cells, so nothing in it can be graded"
    assert outcomes["ben"].score is None and outcomes["ben"].error.startswith(empty)
    assert "Notebook does not appear to be JSON" in outcomes["ben"].error.split("(nbgrader: ")[1]
    assert outcomes["dee"].score is None and outcomes["dee"].error.startswith(no_cells)
    notes = capsys.readouterr().err
    assert empty in notes and no_cells in notes, "said before grading starts"


# ---- the quizzes' structure ---------------------------------------------------------------------


def _questions(nb: nbformat.NotebookNode) -> list[dict]:
    """{"number", "question", "answer", "check"} cells of each question, by grade id (q1_question, ...)."""
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    numbers = sorted(int(m.group(1)) for gid in cells if gid and (m := re.fullmatch(r"q(\d+)_question", gid)))
    return [
        {
            "number": n,
            "question": cells[f"q{n}_question"],
            "answer": cells.get(f"q{n}_answer"),
            "check": cells.get(f"q{n}_check"),
        }
        for n in numbers
    ]


def _key_call(source: str) -> tuple[str, str]:
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "quiz.key"
    ]
    assert len(calls) == 1, f"one quiz.key(letter, explanation, wrong={{...}}) per check cell:\n{source}"
    letter, explanation = (ast.literal_eval(a) for a in calls[0].args)
    return letter, explanation


def _feedback(source: str) -> dict[str, str]:
    """The `wrong={letter: why}` of a check cell's quiz.key call."""
    call = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "quiz.key"
    )
    return ast.literal_eval(next(k.value for k in call.keywords if k.arg == "wrong"))


def test_every_topic_has_its_quiz():
    assert set(TOPICS) <= set(QUIZZES), f"missing quizzes: {sorted(set(TOPICS) - set(QUIZZES))}"


@pytest.mark.parametrize("name", QUIZZES)
def test_quiz_source_is_well_formed(name):
    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4)
    questions = _questions(nb)
    assert len(questions) >= 4 and [q["number"] for q in questions] == list(range(1, len(questions) + 1))
    letters = []
    for q in questions:
        n = q["number"]
        text, answer, check = q["question"], q["answer"], q["check"]
        assert text.cell_type == "markdown" and text.metadata.nbgrader["locked"]
        assert [text.source.count(f"- **{letter}.** ") for letter in "ABCD"] == [1, 1, 1, 1], text.source
        assert answer is not None and answer.metadata.nbgrader["solution"] and not answer.metadata.nbgrader["grade"]
        match = nbgrader_steps.QUIZ_ANSWER.fullmatch(answer.source)
        assert match and match.group("blank") == f'q{n} = None  # your answer: "A", "B", "C" or "D"', answer.source
        letter = re.search(r'= "([A-D])"', answer.source.split("BEGIN SOLUTION")[1]).group(1)
        meta = check.metadata.nbgrader
        assert meta["grade"] and meta["locked"] and meta["points"] == 1 and not meta["solution"]
        key_letter, explanation = _key_call(check.source)
        assert key_letter == letter, f"q{n}: the key says {key_letter}, the solution {letter}"
        assert len(explanation) >= 100, f"q{n}: explain why the answer is right"
        feedback = _feedback(check.source)  # quiz.key checks one text per wrong letter, naming no letter
        assert all(len(why) >= 60 for why in feedback.values()), f"q{n}: say why each wrong option is wrong"
        assert len(set(feedback.values())) == 3, f"q{n}: each wrong option has its own feedback"
        visible, hidden = check.source.split("### BEGIN HIDDEN TESTS\n")
        assert f'quiz.check("q{n}", q{n}, q{n}_key)' in visible
        assert (
            hidden.strip()
            == f'assert quiz.is_right(q{n}, q{n}_key), "q{n} is not the right answer"\n### END HIDDEN TESTS'
        )
        letters.append(letter)
    assert len(set(letters)) >= 3, f"{name}: answers {letters} should spread over A-D"


def test_answers_spread_over_all_letters():
    letters = [
        re.search(r'= "([A-D])"', q["answer"].source.split("BEGIN SOLUTION")[1]).group(1)
        for name in QUIZZES
        for q in _questions(nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4))
    ]
    shares = {letter: letters.count(letter) / len(letters) for letter in "ABCD"}
    assert all(0.15 <= share <= 0.35 for share in shares.values()), shares


def test_the_seed_question_is_in_the_rpn_quiz_word_for_word():
    questions = _questions(nbformat.read(ROOT / "solutions" / "quiz_03_rpn" / "quiz_03_rpn.ipynb", 4))
    seed = [q for q in questions if SEED_QUESTION in q["question"].source]
    assert len(seed) == 1
    options = re.findall(r"- \*\*[A-D]\.\*\* (.*)", seed[0]["question"].source)
    assert options == SEED_OPTIONS and '= "C"' in seed[0]["answer"].source.split("BEGIN SOLUTION")[1]


@pytest.mark.parametrize("name", QUIZZES)
def test_released_quiz_shows_neither_answers_nor_explanations(name):
    source = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4)
    released_text = (ROOT / "quizzes" / name / f"{name}.ipynb").read_text()
    released = nbformat.reads(released_text, 4)
    flat = " ".join(" ".join(cell.source for cell in released.cells).split())
    for q, r in zip(_questions(source), _questions(released)):
        n = q["number"]
        assert r["answer"].source == f'q{n} = None  # your answer: "A", "B", "C" or "D"'
        assert "quiz.key" not in r["check"].source and "HIDDEN" not in r["check"].source
        assert f'quiz.check("q{n}", q{n}, q{n}_key)' in r["check"].source
        letter, explanation = _key_call(q["check"].source)
        assert " ".join(explanation.split()[:8]) not in flat
        key_line = next(line for line in r["check"].source.split("\n") if line.startswith(f"q{n}_key = "))
        key = ast.literal_eval(key_line.split(" = ", 1)[1])
        assert quiz.explanation(letter, key) == explanation  # the sealed key is the source's
        assert {wrong: quiz.why_wrong(wrong, key) for wrong in "ABCD" if wrong != letter} == _feedback(
            q["check"].source
        )
        for why in _feedback(q["check"].source).values():
            assert " ".join(why.split()[:8]) not in flat
    assert "BEGIN SOLUTION" not in released_text


def test_a_released_quiz_gives_immediate_feedback():
    """A self-learner's run of a released quiz, no nbgrader: right, wrong and unanswered questions."""
    name = "quiz_03_rpn"
    source = _questions(nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", 4))
    released = nbformat.read(ROOT / "quizzes" / name / f"{name}.ipynb", 4)
    questions = _questions(released)
    right, why = _key_call(source[0]["check"].source)
    wrong = "A" if right != "A" else "B"
    questions[0]["answer"].source, questions[1]["answer"].source = f'q1 = "{right}"', f'q2 = "{wrong}"'
    NotebookClient(released, timeout=120, kernel_name="python3", allow_errors=True).execute()
    # each message's words, one space apart: the messages wrap their lines for nbgrader validate
    texts = [[o.get("text", "") + o.get("evalue", "") for o in q["check"].outputs] for q in questions]
    outputs = [[" ".join(text.split()) for text in question] for question in texts]
    assert outputs[0][0].startswith(f'✓ q1 = "{right}" is right.') and " ".join(why.split()[:6]) in outputs[0][0]
    why_wrong = " ".join(_feedback(source[1]["check"].source)[wrong].split())
    assert outputs[1] == [
        f'✗ q2 = "{wrong}" is not the right answer. {why_wrong} Change q2 and run both cells: the '
        "explanation opens when the answer is right."
    ]
    assert outputs[2] == [
        'q3 is still None: set q3 = "A", "B", "C" or "D" (one letter, in quotes) in the cell '
        "above, run that cell, then run this one."
    ]


# ----- a job array's task grades its own shard -----
SLURM_TASK_3_OF_4 = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}


@pytest.mark.parametrize(
    "environment, shard",
    [
        ({}, None),
        (SLURM_TASK_3_OF_4, (3, 4)),  # sbatch --array=0-3
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"}, (3, 4)),  # --array=1-4
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_STEP": "2"}, (3, 4)),  # --array=0-6:2
        ({"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "4"}, (1, 4)),  # a Kubernetes Indexed Job's first pod
        ({"JOB_COMPLETION_INDEX": "3", "JOB_COMPLETIONS": "4"}, (4, 4)),
    ],
)
def test_a_job_arrays_task_finds_its_shard(environment, shard):
    found = course.shard_from_environment(environment)
    assert (found and found[0]) == shard
    if found:
        assert all(f"{name}={value}" in found[1] for name, value in environment.items())  # where it came from


@pytest.mark.parametrize(
    "environment, words",
    [
        ({"SLURM_ARRAY_TASK_ID": "2"}, "but not SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MIN"),
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_ID": "7"}, "not one of a range of 4 tasks; autograding needs a plain"),
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2"}, "not one of a range"),
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_COUNT": "four"}, "SLURM_ARRAY_TASK_COUNT='four': a job array sets"),
        ({**SLURM_TASK_3_OF_4, "SLURM_ARRAY_TASK_COUNT": "0"}, "a whole number of at least 1"),
        ({"JOB_COMPLETION_INDEX": "0"}, "set JOB_COMPLETIONS in the Job's pod template to its spec.completions"),
        ({"JOB_COMPLETION_INDEX": "4", "JOB_COMPLETIONS": "4"}, "the index counts from 0 to JOB_COMPLETIONS - 1"),
        ({**SLURM_TASK_3_OF_4, "JOB_COMPLETION_INDEX": "0"}, "both a Slurm job array (SLURM_ARRAY_TASK_ID=2"),
    ],
)
def test_an_inconsistent_job_array_is_refused_saying_what_to_do(environment, words):
    with pytest.raises(ValueError) as refused:
        course.shard_from_environment(environment)
    assert words in str(refused.value)


def test_make_autograde_in_a_job_array_grades_its_tasks_shard(tmp_path, monkeypatch, capsys):
    """The task's K and N come from the environment (said on stderr); a SHARD that contradicts them is refused."""
    _course_folder(tmp_path)
    hand_in(tmp_path, "ada", "03_rpn", ONE_CELL)
    hand_in(tmp_path, "ben", "03_rpn", ONE_CELL)
    monkeypatch.chdir(tmp_path)
    for name, value in SLURM_TASK_3_OF_4.items():
        monkeypatch.setenv(name, value)
    where = "SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_MIN=0"
    assert main(["autograde"]) == 2
    assert capsys.readouterr().err == (
        f"grading shard 3/4 of the class ({where})\n"
        f"error: nothing to grade on shard 3/4: {SUBMITTED}/ holds 2 learners (ada, ben), none of them this shard's\n"
    )
    assert main(["autograde", "--shard", "1/1"]) == 2
    assert capsys.readouterr().err == (
        f"error: SHARD=1/1, but this is task 3 of 4 of a job array ({where}): leave SHARD out of a job array's "
        "script (each task finds its own), or unset the array's variables\n"
    )
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")  # unusable, but overruled by SHARD
    assert main(["autograde", "--shard", "3/3"]) == 2
    assert "nothing to grade on shard 3/3" in capsys.readouterr().err
