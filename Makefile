# The two commands a new user needs (see README):
#   make run   — install everything, then run the quick Si pipeline (every arm against the SNAP reference)
#   make test  — install everything, then lint (ruff, pyproject.toml) and run the test suite
VENV ?= .venv
BIN := $(VENV)/bin
# Read the reference data from a local mirror when one sits beside the repo (../shared/data);
# otherwise eip2nn downloads it into ~/.cache/eip2nn/data and verifies its sha256.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/mlearn),)
export EIP2NN_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: install run test lint bench
install:
	bash scripts/install.sh

run: install
	$(BIN)/eip2nn pipeline run pipelines/si_quick.yaml

test:
	bash scripts/install.sh --with-test-tools
	$(BIN)/ruff check eip2nn tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check eip2nn tests benchmarks scripts

bench: install
	bash scripts/install_bench_deps.sh
	$(BIN)/python benchmarks/labelling_throughput.py
	$(BIN)/python benchmarks/training_throughput.py
	$(BIN)/python benchmarks/nn_accuracy.py
	$(BIN)/python benchmarks/transfer_low_data.py
	$(BIN)/python benchmarks/eip_alignment.py
	$(BIN)/python benchmarks/weak_supervision.py
