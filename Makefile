# ml-docker-template: the template's own development. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
.DEFAULT_GOAL := help
.PHONY: help sample test test-static test-engine check-matrix gpu-check gpu-check-pack bench bench-serving dev-lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# checkov's dependencies clash with the dev tools': it gets a venv of its own (the Kubernetes tests run it)
.venv-checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --require-hashes -r requirements-checkov.txt
	touch $@

# A real MLflow server (mlflow[auth]: 89 distributions) for the registry client's tests: a venv of its own as well
.venv-mlflow/.installed: requirements-mlflow.txt
	$(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet --require-hashes -r requirements-mlflow.txt
	touch $@

# model-signing (OpenSSF Model Signing) brings sigstore, tuf and 30-odd more: a venv of its own, for
# tests/test_model_signing.py, which checks the template's verifier and signer against it
.venv-signing/.installed: requirements-signing.txt
	$(PYTHON) -m venv .venv-signing
	.venv-signing/bin/python -m pip install --quiet --require-hashes -r requirements-signing.txt
	touch $@

sample: $(BIN)/.installed ## render a sample project (default answers, locked) into build/sample
	rm -rf build/sample
	mkdir -p build
	cd build && ../$(BIN)/copier copy --trust --defaults --vcs-ref HEAD .. sample

# The static level runs on both cores (pytest-xdist; the tests of one render in one process, which renders it once);
# the engine level in one process, where every chain is built once and shared by the tests that use it.
STATIC_JOBS ?= 2
# engine chains built at once, beside the tests: 2 builders took the cold engine level from 811 s to 657 s here
MLDT_BUILD_JOBS ?= 2
export MLDT_BUILD_JOBS

test: test-static test-engine ## the whole test suite; the engine tests need Docker (CI: required, elsewhere: skipped)

# the tools that the static level runs for real, each in a venv of its own: checkov, an MLflow server, model-signing
TOOL_VENVS := .venv-checkov/.installed .venv-mlflow/.installed .venv-signing/.installed

test-static: $(BIN)/.installed $(TOOL_VENVS) ## only the tests that need no Docker engine
	$(BIN)/python -m pytest -m "not engine" -n $(STATIC_JOBS) --dist loadgroup $(PYTEST_ARGS)

test-engine: $(BIN)/.installed .venv-checkov/.installed .venv-signing/.installed ## only the engine tests (builds, containers, compose)
	$(BIN)/python -m pytest -m engine $(PYTEST_ARGS)

check-matrix: $(BIN)/.installed ## check includes/matrix.yml against the package index (one line per drift)
	$(BIN)/python tools/check_matrix.py

gpu-check: $(BIN)/.installed ## the GPU check on this machine (CPU where there is no GPU; tools/gpu_check/)
	$(BIN)/python tools/gpu_check/prepare.py
	python3 tools/gpu_check/run.py $(if $(TORCH_WHEEL),--torch-wheel $(TORCH_WHEEL))

gpu-check-pack: $(BIN)/.installed ## render and fetch wheels for the GPU machine (Python 3.12, CUDA 13.0, no network)
	$(BIN)/python tools/gpu_check/prepare.py --python 3.12 --cuda 13.0 --wheels

bench: $(BIN)/.installed ## build the default render and measure it (figures for BENCHMARKS.md)
	$(BIN)/python bench/bench.py

bench-serving: $(BIN)/.installed ## the generated server beside the floor (FastAPI, no model) and seed 002's app under wrk (BENCH_ARGS="--runs 3")
	$(BIN)/python bench/serving.py $(BENCH_ARGS)

dev-lock: $(BIN)/.installed ## re-lock requirements-{dev,checkov,mlflow,signing}.txt
	for name in dev checkov mlflow signing; do \
	  $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    --no-emit-find-links --no-emit-trusted-host -o requirements-$$name.txt requirements-$$name.in || exit 1; \
	done

clean: ## remove the virtual environment and rendered samples
	rm -rf $(VENV) .venv-checkov .venv-mlflow .venv-signing build
