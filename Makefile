# DaMoC — developer entry points. `make demo` and `make test` work on a fresh clone (2 CPU cores, no GPU).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAMOC_HOME ?= $(CURDIR)/.cache/damoc
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DS_BUILD_OPS := 0
OUT ?= runs

.PHONY: help install install-test zoo demo grid compare test test-all compile clean
help:
	@echo "make demo       install, build the tiny zoo + demo data if absent, run a DaMoC selection (kfp.local)"
	@echo "make test       install (with test extras), build the zoo if absent, run the default test suite"
	@echo "make test-all   also the slow suites"
	@echo "make grid       the same quickstart in grid_search mode (the ground truth)"
	@echo "make compare    DaMoC vs grid search: top-1 agreement, rank correlation, wall-time ratio"
	@echo "make compile    recompile pipelines/compiled/damoc_pipeline.yaml"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, pinned exactly: an unpinned resolve pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

zoo: install
	$(BIN)/damoc zoo build

demo: zoo
	$(BIN)/damoc run examples/quickstart.yaml --out $(OUT)/quickstart

grid: zoo
	$(BIN)/damoc run examples/quickstart.yaml --mode grid_search --out $(OUT)/quickstart-grid

compare:
	$(BIN)/damoc compare $(OUT)/quickstart/selection.json $(OUT)/quickstart-grid/selection.json

test: install-test zoo
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install-test zoo
	$(BIN)/python -m pytest -q

compile: install
	$(BIN)/damoc compile --out pipelines/compiled

clean:
	rm -rf $(OUT) .pytest_cache
