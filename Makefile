# Mask R-CNN, stage by stage. Run every target from the repository root (nbgrader reads
# nbgrader_config.py from the current directory).
#
#   make setup      create .venv with everything (idempotent: fast the second time)
#   make lab        start JupyterLab at the lessons
#   make test       the whole test suite (what CI runs)
#   make release    regenerate lessons/ and quizzes/ from solutions/
#   make autograde  grade every submission under grading/submitted, write feedback; JOBS=N grades N at
#                   once, SHARD=K/N grades the K-th of every N learners (several machines, one gradebook)
#   make exchange   create nbgrader's exchange folder (NBGRADER_EXCHANGE, else nbgrader's default)
#   make exchange-release NAME="03_rpn quiz_03_rpn"   put lessons or quizzes into the exchange
#   make exchange-collect NAME="03_rpn quiz_03_rpn"   collect learners' submissions from the exchange
#   make dashboard  draw the class's results (grading/dashboard.png); demos/class_dashboard.ipynb shows them
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

.PHONY: setup lab test release autograde grades bench clean exchange exchange-release exchange-collect dashboard

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

JOBS  ?= 1
SHARD ?= 1/1
autograde: $(STAMP)
	$(PY) -m mrcnn_course.teaching autograde --jobs $(JOBS) --shard $(SHARD)

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
