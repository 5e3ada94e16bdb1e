# make demo   set everything up and run a live store day against the local broker
# make test   lint (ruff, mypy, import layering), then the whole test suite (what CI runs)
# make bench  run the benchmarks (results table + bench/results/*.json)
# make test-cluster  the broker-failover test on a three-node cluster (.ci/cluster; 2-3.5 min)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-cluster lint bench services clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

services:
	@.ci/services rabbitmq management postgresql

demo: setup
	@.ci/services rabbitmq || true
	$(BIN)/cajasync demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: setup services lint
	$(BIN)/pytest

test-cluster: setup services
	CAJASYNC_TEST_CLUSTER=1 $(BIN)/pytest -m cluster tests/faults/test_cluster.py

bench: setup services
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-data bench/results .pytest_cache .mypy_cache .ruff_cache
