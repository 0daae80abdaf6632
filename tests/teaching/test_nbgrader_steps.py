"""mrcnn_course.teaching.nbgrader_steps and nbgrader_config.py: the course's steps are in nbgrader's pipelines
and do their job (sealed quiz keys, quiz answer cells without stubs, the autograding environment).
About 5 s (one test starts a kernel).
"""

import ast
from pathlib import Path

import nbformat
import pytest
from nbgrader.preprocessors import ClearSolutions, Execute

from mrcnn_course.teaching import course, nbgrader_steps, quiz

ROOT = Path(__file__).resolve().parents[2]


def test_seal_quiz_keys_replaces_each_call_by_its_key():
    source = (
        'a_key = quiz.key("A", ("Bilinear — not rounded; "\n    "×2 sampling."), {"B": "b", "C": "c", "D": "d"})\n'
        'b_key = quiz.key(answer="D", explanation="Per class.", wrong={"A": "One.", "B": "b", "C": "c"})  # kept\n'
        'quiz.check("q1", q1, a_key)'
    )
    sealed = nbgrader_steps.seal_quiz_keys(source)
    lines = sealed.split("\n")
    assert len(lines) == 3 and lines[2] == 'quiz.check("q1", q1, a_key)' and lines[1].endswith("# kept")
    a_key, b_key = (ast.literal_eval(line.split(" = ", 1)[1].split("  #")[0]) for line in lines[:2])
    assert quiz.explanation("A", a_key) == "Bilinear — not rounded; ×2 sampling."
    assert quiz.explanation("D", b_key) == "Per class." and quiz.why_wrong("A", b_key) == "One."
    assert "quiz.key" not in sealed and "Bilinear" not in sealed


def test_seal_quiz_keys_needs_plain_strings():
    with pytest.raises(ValueError, match="line 1 must be given plain strings"):
        nbgrader_steps.seal_quiz_keys('k = quiz.key(ANSWER, "why")')


def _solution_cell(source: str) -> nbformat.NotebookNode:
    meta = {"grade": False, "grade_id": "x", "locked": False, "schema_version": 3, "solution": True, "task": False}
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": meta})


def test_quiz_answer_cells_keep_their_blank_line():
    step = nbgrader_steps.ClearSolutionsKeepQuizAnswers()
    answer = _solution_cell(
        'q2 = None  # your answer: "A", "B", "C" or "D"\n### BEGIN SOLUTION\nq2 = "D"\n### END SOLUTION'
    )
    exercise = _solution_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    resources = {"language": "python"}
    assert step.preprocess_cell(answer, resources, 0)[0].source == 'q2 = None  # your answer: "A", "B", "C" or "D"'
    assert step.preprocess_cell(exercise, resources, 1)[0].source == (
        "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )  # lessons keep nbgrader's stub


def test_config_puts_the_course_steps_into_nbgraders_pipelines():
    config = course.course_api(ROOT).config
    assert nbgrader_steps.SealQuizKeys in config.GenerateAssignment.preprocessors
    assert nbgrader_steps.ClearSolutionsKeepQuizAnswers in config.GenerateAssignment.preprocessors
    assert ClearSolutions not in config.GenerateAssignment.preprocessors
    assert nbgrader_steps.AutogradingExecute in config.Autograde.autograde_preprocessors
    assert Execute not in config.Autograde.autograde_preprocessors
    assert config.OverwriteCells.add_missing_cells is True
    assert config.CourseDirectory.db_url.endswith("/grading/gradebook.db")


def test_autograding_kernels_see_autograding_env(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os; print(os.environ.get('AUTOGRADING'), os.environ.get('TQDM_DISABLE'))")
        ]
    )
    nb.metadata.kernelspec = {"name": "python3", "language": "python", "display_name": "Python 3"}
    executed, _ = nbgrader_steps.AutogradingExecute(timeout=60).preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert executed.cells[0].outputs[0].text.strip() == "1 1"
