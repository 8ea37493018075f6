# Hark: `make run` starts the platform, `make test` runs the test suite. Both install first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export SMALLESTAI_TELEMETRY := 0

.PHONY: install system-packages checkpoints run test unit e2e lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[models,test]"
	touch $(STAMP)

install: system-packages $(STAMP)

system-packages:
	@bash scripts/ensure-system-packages.sh

checkpoints: install
	$(BIN)/hark checkpoints bundle

run: install checkpoints
	$(BIN)/hark run

test: install checkpoints
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

e2e: install checkpoints
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check .

bench: install checkpoints
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/memory.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
