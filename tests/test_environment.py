"""The learners' conda environment and pyproject.toml declare the same dependencies."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def conda_pip_dependencies() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*- pip:\s*$", line))
    deps = []
    for line in lines[start + 1 :]:
        match = re.match(r"\s+- (.+?)\s*$", line)
        if not match:
            break
        deps.append(match.group(1))
    return [d for d in deps if d != "-e ."]


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(conda_pip_dependencies()) == sorted(pyproject)


def test_torch_pins_are_the_ones_this_machine_serves():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in pyproject and "torchvision==0.29.1" in pyproject
