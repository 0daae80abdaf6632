# Mask R-CNN, stage by stage. Run every target from the repository root (nbgrader reads
# nbgrader_config.py from the current directory).
#
#   make setup      create .venv with everything (idempotent: fast the second time)
#   make lab        start JupyterLab at the lessons; on a remote or headless machine:
#                   make lab LAB_ARGS="--no-browser --ip=127.0.0.1 --port=8888", then on your own
#                   machine `ssh -N -L 8888:localhost:8888 HOST` and open the URL it printed
#   make test       the whole test suite (what CI runs), after `make check`
#   make test-fast  the tests not marked slow or browser (a few minutes), after `make check`
#   make check      ruff (lint and format) and mypy
#   make release    regenerate lessons/ and quizzes/ from solutions/
#   make autograde  grade every submission under grading/submitted, write feedback; JOBS=N grades N at
#                   once, SHARD=K/N grades the K-th of every N learners (several machines, one gradebook;
#                   in a Slurm job array or a Kubernetes Indexed Job each task finds its K and N itself)
#   make exchange   create nbgrader's exchange folder (NBGRADER_EXCHANGE, else nbgrader's default)
#   make exchange-release NAME="03_rpn quiz_03_rpn"   put lessons or quizzes into the exchange
#   make exchange-collect NAME="03_rpn quiz_03_rpn"   collect learners' submissions from the exchange
#   make dashboard  draw the class's results (grading/dashboard.png); demos/class_dashboard.ipynb shows them
#   make grades     write grading/grades.csv (learner x assignment)
#   make bench      print the benchmarks' figures

# The course runs on Python 3.10 to 3.13 (pyproject.toml's requires-python). A new .venv is made with the
# first of PYTHONS that runs and is in that range: a name that exists but does not run (a pyenv shim of a
# version that is not selected) is skipped. `make setup PYTHON=/path/to/python3.12` picks one yourself,
# VENV=.venv-3.13 keeps a second environment beside the first.
PYTHONS ?= python3.12 python3.11 python3.13 python3.10
SUPPORTED_PYTHON := import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))
PYTHON ?= $(shell for p in $(PYTHONS); do $$p -c '$(SUPPORTED_PYTHON)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export TQDM_DISABLE ?= 1
# The environment's commands first on PATH (nbgrader's gradebook runs `alembic`, the tests `jupyter`),
# as if it were activated.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup lab test test-fast check release autograde grades bench clean exchange exchange-release exchange-collect dashboard

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	    if [ -z "$(PYTHON)" ]; then \
	        echo "No Python 3.10 to 3.13 found (tried $(PYTHONS)). Install one (python.org, your package" \
	             "manager, pyenv or conda), or name it: make setup PYTHON=/path/to/python3.12" >&2; exit 1; \
	    elif ! $(PYTHON) -c '$(SUPPORTED_PYTHON)' >/dev/null 2>&1; then \
	        echo "$(PYTHON) is not a working Python 3.10 to 3.13 ($$($(PYTHON) -V 2>&1 | head -1))." \
	             "Name another: make setup PYTHON=/path/to/python3.12" >&2; exit 1; \
	    fi; \
	    echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) -V 2>&1))"; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

LAB_ARGS ?=
lab: $(STAMP)
	TQDM_DISABLE= $(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/lessons $(LAB_ARGS)

test: $(STAMP) check
	$(PY) -m pytest

# The quick tests (about 2 minutes): everything not marked slow (notebooks, nbgrader, R-50, training runs)
# or browser.
test-fast: $(STAMP) check
	$(PY) -m pytest -m "not slow and not browser"

# Lint, format and types, as CI enforces them (make test runs this first).
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

release: $(STAMP)
	$(PY) -m mrcnn_course.teaching release

JOBS  ?= 1
SHARD ?=
autograde: $(STAMP)
	$(PY) -m mrcnn_course.teaching autograde --jobs $(JOBS) $(if $(SHARD),--shard $(SHARD))

grades: $(STAMP)
	$(PY) -m mrcnn_course.teaching grades

# Every user of the JupyterHub writes into the exchange (nbgrader: "writable to everyone", 777);
# nbgrader's default folder needs root: `sudo make exchange`.
EXCHANGE ?= $(or $(NBGRADER_EXCHANGE),/usr/local/share/nbgrader/exchange)
exchange:
	mkdir -p $(EXCHANGE) && chmod 0777 $(EXCHANGE)

exchange-release: $(STAMP)
	$(PY) -m mrcnn_course.teaching exchange-release $(NAME)

exchange-collect: $(STAMP)
	$(PY) -m mrcnn_course.teaching exchange-collect $(NAME)

dashboard: $(STAMP)
	$(PY) -m mrcnn_course.teaching dashboard

bench: $(STAMP)
	$(PY) benchmarks/vs_torchvision.py
	$(PY) benchmarks/train_shapes.py
	$(PY) benchmarks/autograde_course.py

clean:
	rm -rf $(VENV) grading runs test-artifacts
