# One venv, created on demand; every target works on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config/default.json
ARGS ?=

.PHONY: help install run test lint typecheck check bench bench-quick bench-peers chaos soak clean

help:
	@echo "make run          start the gateway with $(CONFIG)"
	@echo "make test         run the whole test suite"
	@echo "make check        ruff + mypy --strict + tests (what CI runs)"
	@echo "make bench        full benchmark (bench/results/latest.md)"
	@echo "make bench-quick  quick benchmark (< 2 minutes)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m chromagent_proxy --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check chromagent_proxy tests $(wildcard bench)
	$(BIN)/ruff format --check chromagent_proxy

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Benchmarks (bench/README.md): bench-only deps come from bench/install.sh.
bench: $(STAMP)
	sh bench/install.sh
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	sh bench/install.sh
	$(BIN)/python -m bench.run --quick

bench-peers: $(STAMP)
	sh bench/install.sh --peers
	$(BIN)/python -m bench.run --peers

# Reliability (docs/readme-reliability.md): the chaos, contract and property suites at full
# size (10,000 connections, 1,000 aborts, more generated requests), and the 10-minute soak.
chaos: $(STAMP)
	CHAOS_SCALE=1 CONTRACT_EXAMPLES=300 $(BIN)/python -m pytest -q tests/chaos tests/contract tests/property

soak: $(STAMP)
	$(BIN)/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
