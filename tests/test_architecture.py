"""The package's folders are its architecture: dependencies run one way, and the short names resolve.

    teaching -> show -> training -> model      (an arrow: may import; never against the arrows)

Within training, the data layer (scenes, data, images, coco, encoding, evaluation) imports nothing of
the loop or its trace: a low module never reaches up for a constant.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import mrcnn_course

PACKAGE = Path(mrcnn_course.__file__).parent
LAYERS = ["model", "training", "show", "teaching"]  # each may import those before it, never those after
DATA_LAYER = {"scenes", "data", "images", "coco", "encoding", "evaluation"}
TRAINING_TOP = {"loop", "training_trace", "budget", "pretrained"}


def imported_modules(path: Path) -> set[str]:
    """The mrcnn_course modules a file imports (at its top or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrcnn_course"):
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("mrcnn_course")}
    return names


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    offences = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if layer_of(name) is not None and layer_of(name) not in allowed
    ]
    assert offences == []


def test_the_data_layer_does_not_reach_up_into_the_loop_or_its_trace():
    offences = [
        f"training/{name}.py imports {imported}"
        for name in sorted(DATA_LAYER)
        for imported in sorted(imported_modules(PACKAGE / "training" / f"{name}.py"))
        if imported.split(".")[2:3] and imported.split(".")[2] in TRAINING_TOP
    ]
    assert offences == []


def test_every_short_name_resolves_in_a_fresh_interpreter():
    code = "import mrcnn_course\nfor name in mrcnn_course.__all__:\n    getattr(mrcnn_course, name)\n"
    code += "print(len(mrcnn_course.__all__))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(mrcnn_course.__all__) >= 30


def test_an_unknown_short_name_lists_the_known_ones():
    with pytest.raises(AttributeError, match="its short names are: model, input_image, backbone"):
        mrcnn_course.no_such_name  # noqa: B018


def test_a_quiz_notebook_does_not_import_torch():
    code = "import sys\nfrom mrcnn_course import quiz\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_every_subpackage_has_a_map_naming_each_of_its_modules():
    for layer in LAYERS:
        doc = importlib.import_module(f"mrcnn_course.{layer}").__doc__ or ""
        modules = [p.stem for p in (PACKAGE / layer).glob("*.py") if not p.stem.startswith("_")]
        modules += [p.name for p in (PACKAGE / layer).iterdir() if (p / "__init__.py").exists()]
        missing = [m for m in modules if f"{m}.py" not in doc and f"{m}/" not in doc]
        assert missing == [], f"mrcnn_course/{layer}/__init__.py's docstring does not name {missing}"
