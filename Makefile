# Mask R-CNN, stage by stage. Run every target from the repository root (nbgrader reads
# nbgrader_config.py from the current directory).
#
#   make setup      create .venv with everything (idempotent: fast the second time)
#   make lab        start JupyterLab at the lessons
#   make test       the whole test suite (what CI runs)
#   make release    regenerate lessons/ and quizzes/ from solutions/
#   make autograde  grade every submission under grading/submitted, write feedback
#   make grades     write grading/grades.csv (learner x assignment)
#   make bench      print the benchmarks' figures

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export TQDM_DISABLE ?= 1
# The environment's commands first on PATH (nbgrader's gradebook runs `alembic`, the tests `jupyter`),
# as if it were activated.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup lab test release autograde grades bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

lab: $(STAMP)
	TQDM_DISABLE= $(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/lessons

test: $(STAMP)
	$(PY) -m pytest

release: $(STAMP)
	$(PY) -m mrcnn_course.teaching release

autograde: $(STAMP)
	$(PY) -m mrcnn_course.teaching autograde

grades: $(STAMP)
	$(PY) -m mrcnn_course.teaching grades

bench: $(STAMP)
	$(PY) benchmarks/vs_torchvision.py
	$(PY) benchmarks/train_shapes.py
	$(PY) benchmarks/autograde_course.py

clean:
	rm -rf $(VENV) grading runs test-artifacts
