"""The three routes (README and lesson 00): the builder's times are the times each lesson states in its
first cell ("**Time:** about N minutes"), for every lesson notebook in solutions/; lesson 00 names the
three routes. Reads the notebooks only: well under a second."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIME = re.compile(r"\*\*Time:\*\* about (\d+) minutes")


def first_cell(notebook: Path) -> str:
    return "".join(json.loads(notebook.read_text())["cells"][0]["source"])


def lesson_times() -> dict[str, int]:
    """{"03a": 80, ...}: each lesson notebook's own time, by its number (and letter)."""
    times = {}
    for notebook in sorted(ROOT.glob("solutions/[0-9][0-9]_*/*.ipynb")):
        key = re.match(r"\d\d[a-z]?", notebook.stem).group()
        found = TIME.search(first_cell(notebook))
        assert found, f"{notebook.relative_to(ROOT)}: its first cell states no '**Time:** about N minutes'"
        times[key] = int(found.group(1))
    return times


def test_lesson_00_lists_each_lessons_own_time():
    cells = {
        c["id"]: "".join(c["source"])
        for c in json.loads((ROOT / "solutions/00_pipeline/00_pipeline.ipynb").read_text())["cells"]
    }
    rows = re.findall(r"^\| (\d+)([a-z]?) · [^|]+\| about (\d+) minutes \|$", cells["routes"], re.MULTILINE)
    listed = {f"{int(number):02d}{letter}": int(minutes) for number, letter, minutes in rows}  # "3a" -> "03a"
    assert listed == lesson_times()
    for route in ("**Overview**", "**Explorer**", "**Builder**"):
        assert route in cells["routes"]


def test_the_readme_lists_each_lessons_own_time():
    readme = (ROOT / "README.md").read_text()
    routes = readme[readme.index("**Three routes**") :]
    routes = routes[: routes.index("\n\n", routes.index("The builder's times"))]
    listed = {key: int(m) for key, m in re.findall(r"\b(\d\d[a-z]?) about (\d+)\s+minutes", routes)}
    assert listed == lesson_times()
    for route in ("| overview |", "| explorer |", "| builder |"):
        assert route in routes
