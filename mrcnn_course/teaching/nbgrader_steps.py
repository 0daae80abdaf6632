"""The course's steps in nbgrader's pipelines: nbgrader_config.py swaps them in.

    RELEASE_PREPROCESSORS    nbgrader generate_assignment's pipeline, plus:
        SealQuizKeys                    quiz.key("C", "why") -> the sealed key string, so a released
                                        quiz shows neither the letter nor the explanation
        ClearSolutionsKeepQuizAnswers   a quiz answer cell keeps `q1 = None  # your answer ...` instead
                                        of nbgrader's `raise NotImplementedError()` stub
    AUTOGRADE_PREPROCESSORS  nbgrader autograde's pipeline, with:
        AutogradingExecute              kernels run with AUTOGRADING=1 and TQDM_DISABLE=1 (warm, forked
                                        from the grading process's zygote when it has one: warm_kernels.py);
                                        then every graded exercise is checked again outside the learner's
                                        kernel (grading/sealed.py): a failure there scores the cell 0

Both lists are nbgrader 0.9.6's defaults with those steps swapped in; an nbgrader whose pipelines
no longer hold the step being replaced fails loudly at import.
"""

import ast
import itertools
import json
import os
import re
from typing import Any
from unittest import mock

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbgrader.converters import Autograde, GenerateAssignment
from nbgrader.preprocessors import ClearSolutions, Execute, NbGraderPreprocessor

from mrcnn_course.teaching import quiz, warm_kernels

AUTOGRADING_ENV = {"AUTOGRADING": "1", "TQDM_DISABLE": "1"}  # lessons shorten training when AUTOGRADING=1


def seal_quiz_keys(source: str) -> str:
    """A cell's source with every `quiz.key("C", "explanation")` call replaced by the key it returns."""
    tree = ast.parse(source)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "key"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "quiz"
    ]
    raw = source.encode("utf-8")  # ast's column offsets count UTF-8 bytes
    line_starts = [0, *itertools.accumulate(len(line) for line in raw.splitlines(keepends=True))]
    for call in sorted(calls, key=lambda c: (c.lineno, c.col_offset), reverse=True):  # last first: offsets hold
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in call.keywords}
        except ValueError as error:
            raise ValueError(
                f"quiz.key(...) on line {call.lineno} must be given plain strings, "
                f'e.g. quiz.key("C", "why C is right"), so it can be sealed at release'
            ) from error
        start = line_starts[call.lineno - 1] + call.col_offset
        assert call.end_lineno is not None and call.end_col_offset is not None  # set by ast.parse
        end = line_starts[call.end_lineno - 1] + call.end_col_offset
        raw = raw[:start] + json.dumps(quiz.key(*args, **kwargs)).encode("utf-8") + raw[end:]
    return raw.decode("utf-8")


class SealQuizKeys(NbGraderPreprocessor):
    """Release: replace each quiz.key(letter, explanation) by its key, so the release shows neither."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and "quiz.key(" in cell.source:
            cell.source = seal_quiz_keys(cell.source)
        return cell, resources


# q1 = None  # your answer: "A", "B", "C" or "D"      <- kept
# ### BEGIN SOLUTION / q1 = "C" / ### END SOLUTION     <- removed, with no stub
QUIZ_ANSWER = re.compile(
    r"(?P<blank>(?P<name>q\d+) = None\b[^\n]*)\n### BEGIN SOLUTION\n(?P=name) = \"[A-D]\"\n### END SOLUTION\n?"
)


class ClearSolutionsKeepQuizAnswers(ClearSolutions):
    """Release: nbgrader's ClearSolutions, except that a quiz answer cell keeps its `q1 = None` line
    instead of getting `raise NotImplementedError()`: a quiz runs top to bottom before it is answered."""

    def _replace_solution_region(self, cell, language: str) -> bool:
        match = QUIZ_ANSWER.fullmatch(cell.source) if cell.cell_type == "code" else None
        if match is None:
            return super()._replace_solution_region(cell, language)
        cell.source = match.group("blank")
        return True


class WarmKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager, launching warm_kernels' launcher where the kernel spec says ipykernel's:
    a fork of the grading process's zygote when it has one (course.autograde starts it), else a kernel as usual."""

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        if command[1:3] == warm_kernels.IPYKERNEL_LAUNCHER:
            command[1:3] = warm_kernels.THIS_LAUNCHER
        return command


class AutogradingExecute(Execute):
    """Autograde: nbgrader's Execute, with AUTOGRADING=1 and TQDM_DISABLE=1 in the kernel's environment
    (the kernel inherits it when it starts), whether autograding runs from the command line or the
    formgrader. Execute's settings (timeout, ...) apply to it.

    Then every graded exercise is checked again outside the learner's kernel (grading/sealed.py), where
    nothing the learner's cells rebound or patched can reach: a grade cell whose exercise fails there gets
    an error output, which nbgrader scores 0."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", WarmKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        with mock.patch.dict(os.environ, AUTOGRADING_ENV):
            nb, resources = super().preprocess(nb, resources, km=km)
        from mrcnn_course.teaching.grading import sealed  # imports torch: only when autograding

        folder = (resources or {}).get("metadata", {}).get("path") or os.getcwd()
        failures = sealed.verify_notebook(nb, folder)
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id in failures and not any(o.output_type == "error" for o in cell.outputs):
                message = failures[grade_id]
                cell.outputs.append(
                    nbformat.v4.new_output("error", ename="HiddenCheckFailed", evalue=message, traceback=[message])
                )
        return nb, resources


def _with(converter: Any, pipeline: str, old: type, new: type) -> list:
    """nbgrader's default `pipeline` of `converter` with the step `old` replaced by `new`."""
    steps = converter.class_traits()[pipeline].default()
    assert old in steps, f"nbgrader's {pipeline} no longer has {old.__name__}: update mrcnn_course/nbgrader_steps.py"
    return [new if step is old else step for step in steps]


RELEASE_PREPROCESSORS = [SealQuizKeys] + _with(
    GenerateAssignment, "preprocessors", ClearSolutions, ClearSolutionsKeepQuizAnswers
)
AUTOGRADE_PREPROCESSORS = _with(Autograde, "autograde_preprocessors", Execute, AutogradingExecute)
