# ml-docker-template: the template's own development. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
.DEFAULT_GOAL := help
.PHONY: help sample test test-static bench dev-lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

sample: $(BIN)/.installed ## render a sample project (default answers, locked) into build/sample
	rm -rf build/sample
	$(BIN)/copier copy --trust --defaults --vcs-ref HEAD -d project_name="Sample Model" . build/sample

test: $(BIN)/.installed ## the whole test suite; the engine tests need Docker (CI: required, elsewhere: skipped)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-static: $(BIN)/.installed ## only the tests that need no Docker engine
	$(BIN)/python -m pytest -m "not engine" $(PYTEST_ARGS)

bench: $(BIN)/.installed ## build the default render and measure it (figures for BENCHMARKS.md)
	$(BIN)/python bench/bench.py

dev-lock: $(BIN)/.installed ## re-lock requirements-dev.txt
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --no-emit-trusted-host -o requirements-dev.txt requirements-dev.in

clean: ## remove the virtual environment and rendered samples
	rm -rf $(VENV) build
