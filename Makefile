# medvox_nb: every target sets itself up first (scripts/setup.sh is idempotent and fast when done).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
OUT ?= outputs/demo

.PHONY: setup demo test test-fast docs lab export clean bench

setup:
	@bash scripts/setup.sh

## demo: the main job on the embedded samples (data_samples/) -> $(OUT)
demo: setup
	@bash scripts/demo.sh $(OUT)

## test: nbdev_test (inline notebook tests) + pytest (CLI, integration, reliability, docs site)
test: setup
	@bash scripts/test.sh

docs: setup
	@$(BIN)/python scripts/build_docs.py

lab: setup
	@$(BIN)/python -m pip -q install jupyterlab && $(BIN)/jupyter lab nbs/

export: setup
	@$(BIN)/nbdev_export

bench: setup
	@bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) .setup-stamp build *.egg-info docs/_build outputs
