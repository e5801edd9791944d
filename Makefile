# `make local` runs the whole flow on this machine; `make test` runs the offline test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
# the workload `make serve` serves (its latest locally registered model)
WORKLOAD ?= housing

.PHONY: setup test local serve benchmarks

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

test: setup
	$(BIN)/python -m pytest -q

local: setup
	$(BIN)/python -m jobs run --local --data-dir $(DATA_DIR)

serve: setup
	$(BIN)/python -m jobs serve --local --workload $(WORKLOAD)
