"""The learners' conda environment, pyproject.toml and the Makefile agree on Python and the dependencies."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")  # what the README promises


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def conda_dependencies() -> list[str]:
    """environment.yml's dependencies: conda's first, then pip's (indented under `- pip:`)."""
    return [m.group(1) for m in re.finditer(r"^\s+- (.+?)\s*$", (ROOT / "environment.yml").read_text(), re.M)]


def conda_pip_dependencies() -> list[str]:
    deps = conda_dependencies()
    return [d for d in deps[deps.index("pip:") + 1 :] if d != "-e ."]


def test_environment_yml_matches_pyproject():
    assert sorted(conda_pip_dependencies()) == sorted(pyproject()["dependencies"])


def test_python_range_is_the_same_everywhere():
    assert pyproject()["requires-python"] == f">={SUPPORTED[0]},<3.{int(SUPPORTED[-1].split('.')[1]) + 1}"
    python = [d for d in conda_dependencies() if d.startswith("python")]
    assert python == ["python" + pyproject()["requires-python"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PYTHONS\s*\?=\s*(.+)$", makefile, re.M), "the Makefile lists the interpreters it tries"
    tried = re.search(r"^PYTHONS\s*\?=\s*(.+)$", makefile, re.M).group(1).split()
    assert sorted(tried) == sorted(f"python{v}" for v in SUPPORTED)
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.10 to 3.13" in readme


def test_this_python_is_supported():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED


def make(*args: str) -> subprocess.CompletedProcess:
    """`make` with the given variables, from the repository root (the Python checks come before any install).
    A fresh make: under `make test PYTHON=...` the outer make's variables would reach it through MAKEFLAGS."""
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON")}
    return subprocess.run(["make", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=environment)


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode, reason="no make")
def test_makefile_says_clearly_when_no_supported_python_is_found(tmp_path):
    result = make("setup", f"VENV={tmp_path / 'venv'}", "PYTHONS=python2.7-does-not-exist")
    assert result.returncode != 0 and not (tmp_path / "venv").exists()
    assert "No Python 3.10 to 3.13 found (tried python2.7-does-not-exist)" in result.stderr


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode, reason="no make")
def test_makefile_refuses_an_unsupported_python_given_by_name(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9\nexit 1\n")  # a stand-in that fails the version check
    old.chmod(0o755)
    result = make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={old}")
    assert result.returncode != 0 and not (tmp_path / "venv").exists()
    assert f"{old} is not a working Python 3.10 to 3.13 (3.9)" in result.stderr


def test_torch_pins_are_the_ones_this_machine_serves():
    assert "torch==2.14.1" in pyproject()["dependencies"] and "torchvision==0.29.1" in pyproject()["dependencies"]
