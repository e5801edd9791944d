# `make local` runs the whole flow on this machine; `make test` runs the offline test suite. Both install from
# uv.lock (pyproject.toml's groups: docs/reference.md, "Dependencies").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
# the workload `make serve` serves (its latest locally registered model)
WORKLOAD ?= housing
# uv: the one on PATH, else this version from PyPI in a bootstrap virtualenv (`pip install --user` fails on
# PEP 668 systems; no download script)
UV_VERSION := 0.9.30
UV_HOME := .uv
UV := $(or $(shell command -v uv 2>/dev/null),$(UV_HOME)/bin/uv)
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --python $(PYTHON)
# uv installs without compiling (pyproject.toml); each module is compiled on its first import and its bytecode kept,
# even where the shell sets PYTHONDONTWRITEBYTECODE: otherwise every one of the suite's and the flow's processes
# compiles MLflow, scikit-learn and the rest again (a fresh clone's suite: 383 s instead of 229 s)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-local test local serve docs uv

uv: | $(UV)

# the bootstrap virtualenv is made without pip (putting pip in it takes about 7 s): this Python's pip installs uv into it
# (`pip --python`, pip 22.3 and later); where this Python has no such pip, the pip that ensurepip puts in it
$(UV_HOME)/bin/uv:
	$(PYTHON) -m venv --without-pip $(UV_HOME)
	@echo "installing uv==$(UV_VERSION) from PyPI into $(UV_HOME)/"
	@if $(PYTHON) -m pip --python $(UV_HOME)/bin/python --version >/dev/null 2>&1; then \
		$(PYTHON) -m pip --python $(UV_HOME)/bin/python install --quiet uv==$(UV_VERSION); \
	else \
		$(UV_HOME)/bin/python -m ensurepip --default-pip && $(UV_HOME)/bin/python -m pip install --quiet uv==$(UV_VERSION); \
	fi

# every group: the tests exercise all of the project
setup: $(VENV)/.all-groups

$(VENV)/.all-groups: pyproject.toml uv.lock | $(UV)
	$(SYNC) --all-groups
	touch $@

# what runs on this machine only (`local`: no cloud SDK, no Pulumi), added beside whatever the environment holds
setup-local: $(VENV)/.local-group

$(VENV)/.local-group: pyproject.toml uv.lock | $(UV)
	$(SYNC) --no-default-groups --group local --inexact
	touch $@

test: setup
	$(BIN)/python -m pytest -q

local: setup-local
	$(BIN)/python -m jobs run --local --data-dir $(DATA_DIR)

serve: setup-local
	$(BIN)/python -m jobs serve --local --workload $(WORKLOAD)

# the reference as a site (mkdocs.yml); --strict: a broken link or a page missing from the nav fails
docs: setup
	$(BIN)/mkdocs build --strict --site-dir site
