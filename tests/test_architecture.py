"""The package's folders are its architecture: dependencies run one way, and each module has one address.

    teaching -> show -> training -> model      (an arrow: may import; never against the arrows)

Within training, the data layer (scenes, data, images, coco, encoding, evaluation) imports nothing of
the loop or its trace: a low module never reaches up for a constant.

No module imports in a circle, counting every import statement that can run: at a module's top and inside
functions (an import deferred into a function still ties the two modules together, and only moves the
failure from import time to call time). Not counted: imports under `if TYPE_CHECKING:`, which never run
(components.py names the stage functions there so that editors show the forwarders' signatures), and
look-ups by dotted name (components finds a component's implementations by module name when asked for).
`from package import name` counts as importing package.name when that is a module, else the package.
"""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mrcnn_course

PACKAGE = Path(mrcnn_course.__file__).parent
LAYERS = ["model", "training", "show", "teaching"]  # each may import those before it, never those after
DATA_LAYER = {"scenes", "data", "images", "coco", "encoding", "evaluation"}
TRAINING_TOP = {"loop", "training_trace", "budget", "pretrained"}


def module_name(path: Path) -> str:
    """mrcnn_course/model/rpn.py -> "mrcnn_course.model.rpn"; a package's __init__.py -> the package."""
    parts = ["mrcnn_course", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, runtime_only: bool = False) -> set[str]:
    """The mrcnn_course modules a file imports (at its top or inside functions; with runtime_only, not those
    under `if TYPE_CHECKING:`), each resolved to a module: `from a.b import c` names a.b.c if that is a module."""
    tree = ast.parse(path.read_text())
    type_checking_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    names = set()
    for node in ast.walk(tree):
        if runtime_only and id(node) in type_checking_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrcnn_course"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("mrcnn_course")}
    return names & MODULES.keys()


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a path back to its start) for each group of modules that import each other."""
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                circles.append(path[path.index(imported) :] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return circles


def test_no_module_imports_in_a_circle():
    graph = {module: imported_modules(path, runtime_only=True) for module, path in MODULES.items()}
    circles = [" -> ".join(circle) for circle in import_circles(graph)]
    assert circles == [], "import circles:\n" + "\n".join(circles)


def test_a_circle_is_found_however_long():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_circles(graph) == [["a", "b", "c", "a"]]
    assert import_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


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


def test_every_module_has_one_address_and_imports_in_a_fresh_interpreter():
    """No package re-exports its modules' names (a name has one address, the module that defines it), and
    every module imports by that address alone."""
    re_exported = [
        f"{module_name(init)} imports {alias.name} from {node.module}"
        for init in sorted(PACKAGE.rglob("__init__.py"))
        if init.parent.name != "grading"  # the grading package is the checks' address: grading.check_<name>
        for node in ast.parse(init.read_text()).body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mrcnn_course")
        for alias in node.names
        if not (PACKAGE.joinpath(*node.module.split(".")[1:], f"{alias.name}.py")).exists()
    ]
    assert re_exported == []
    with pytest.raises(AttributeError):
        mrcnn_course.data  # noqa: B018  (no short names)
    modules = [module_name(path) for path in sorted(PACKAGE.rglob("*.py")) if path.name != "__main__.py"]
    code = "import importlib\nfor name in " + repr(modules) + ":\n    importlib.import_module(name)\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_notebooks_and_the_readme_import_each_module_by_its_address():
    """`from mrcnn_course import data` (a short name) does not resolve: every import names the module's path."""
    root = PACKAGE.parent
    files = [*root.glob("solutions/*/*.ipynb"), *root.glob("demos/*.ipynb"), root / "README.md"]
    files += [*root.glob("tests/**/*.py"), *root.glob("benchmarks/*.py")]
    offences = [
        f"{path.relative_to(root)}: {line.strip()}"
        for path in files
        if path != Path(__file__)
        for line in path.read_text().replace("\\n", "\n").splitlines()
        if re.search(r"from mrcnn_course import |\bmrcnn_course\.(train|maskrcnn_small|data|viz)\b", line)
        and "re.search" not in line
    ]
    assert offences == []


def test_a_quiz_notebook_does_not_import_torch():
    code = "import sys\nfrom mrcnn_course.teaching import quiz\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_every_subpackage_has_a_map_naming_each_of_its_modules():
    for layer in LAYERS:
        doc = importlib.import_module(f"mrcnn_course.{layer}").__doc__ or ""
        modules = [p.stem for p in (PACKAGE / layer).glob("*.py") if not p.stem.startswith("_")]
        modules += [p.name for p in (PACKAGE / layer).iterdir() if (p / "__init__.py").exists()]
        missing = [m for m in modules if f"{m}.py" not in doc and f"{m}/" not in doc]
        assert missing == [], f"mrcnn_course/{layer}/__init__.py's docstring does not name {missing}"
