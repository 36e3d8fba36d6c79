# One venv, created on demand; every target works on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs only what the gateway needs; test/check add the dev tools.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev
CONFIG ?= config/default.json
ARGS ?=

.PHONY: help install run test test-all test-debug lint typecheck check bench bench-quick bench-peers chaos soak clean

help:
	@echo "make run                          start the gateway with $(CONFIG) on 127.0.0.1:3000"
	@echo "make run CONFIG=my.json ARGS='--port 8080 --log-format text'"
	@echo "                                  another config file; ARGS go to chromagent-gateway"
	@echo "make install                      create .venv with the gateway and the dev tools"
	@echo "make test                         the test suite without the tests marked slow (< 3 min)"
	@echo "make test-all                     every test, the slow ones too"
	@echo "make test-debug                   the e2e tests with asyncio debug mode on"
	@echo "make check                        ruff + mypy --strict + every test (what CI runs)"
	@echo "make chaos / make soak            reliability suites at full size / 10-minute soak"
	@echo "make bench                        full benchmark (bench/results/latest.md)"
	@echo "make bench-quick                  quick benchmark (< 2 minutes)"
	@echo "make clean                        remove .venv and caches"
	@echo "Outside make: .venv/bin/chromagent-gateway --config FILE (or: . .venv/bin/activate)"

$(RUN_STAMP): pyproject.toml
	@echo "make: creating $(VENV) and installing the gateway's runtime dependencies (about a minute)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	@echo "make: installing the dev tools (pytest, mypy, ruff, SDKs used by the tests)"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m chromagent_proxy --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# asyncio debug mode: never-awaited coroutines, non-threadsafe loop calls, slow callbacks logged.
test-debug: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -q -m "not slow" tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check chromagent_proxy tests $(wildcard bench)
	$(BIN)/ruff format --check chromagent_proxy

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test-all

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
