# herald — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help install browser stack-up stack-down stack-status down demo test test-unit test-integration \
	test-faults bench bench-processor bench-senders bench-ledger bench-crash bench-emulators api scheduler loadtest lint fmt typecheck check clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# Debian's Chromium and its WebDriver, for the preference page browser test (never a
# downloaded browser build).
BROWSER_PKGS := chromium chromium-driver

browser: ## Install headless Chromium and chromedriver from Debian (apt-get), if missing
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(BROWSER_PKGS); \
	fi

install: $(STAMP) browser ## Create .venv, install herald with its dev tools and the test browser

stack-up: install ## Start Kafka and Cassandra (reused when already healthy), create topics and tables
	$(PY) -m infra.stack up

stack-down: install ## Stop Kafka and Cassandra
	$(PY) -m infra.stack down

stack-status: install ## Show health, ports and memory of Kafka and Cassandra
	$(PY) -m infra.stack status

down: stack-down ## Stop everything the demo or the tests left running

# A local stack: the services these start may use the secrets published in herald's source
# (outside HERALD_PROFILE=dev they refuse to start with them).
demo test test-unit test-integration test-faults bench bench-processor bench-senders loadtest: export HERALD_PROFILE = dev

demo: stack-up ## Start everything, send a realistic batch, show what was delivered and dropped
	$(PY) -m herald.demo

test: stack-up ## Install, start the stack, run unit, integration and end-to-end tests
	$(PY) -m herald.testrun -m "not faults" $(PYTEST_ARGS)

test-unit: install ## Unit tests only (no servers)
	$(PY) -m herald.testrun tests/unit tests/contract $(PYTEST_ARGS)

test-integration: stack-up ## Integration tests only (real Kafka and Cassandra, no pipeline processes)
	$(PY) -m herald.testrun -m integration $(PYTEST_ARGS)

test-faults: stack-up ## Fault-injection suite (kills, restarts, provider faults)
	$(PY) -m herald.testrun -m faults $(PYTEST_ARGS)

bench: stack-up ## Benchmarks: pipeline throughput/latency vs the raw Kafka passthrough
	$(PY) -m herald.bench

bench-processor: stack-up ## Processor alone: cold/warm requests/s and CPU µs per request, Faust vs a plain loop
	$(PY) -m herald.bench.processor

bench-senders: stack-up ## Senders alone (null provider): deliveries/s, CPU µs per delivery, ledger batches
	$(PY) -m herald.bench.senders

bench-ledger: stack-up ## The delivery ledger alone: Cassandra CPU per Paxos row by batch size, and what lingering buys
	$(PY) -m herald.bench.ledger

bench-crash: stack-up ## A sender SIGKILLed mid-backlog: deliveries left uncertain_after_crash, nothing lost or doubled
	$(PY) -m herald.bench.crash

bench-emulators: install ## Each lean provider emulator alone: requests/s, CPU µs per request, RSS
	$(PY) -m herald.bench.emulators

api: install ## Run the authenticated send API on :8080 (python -m producers api)
	$(PY) -m producers api

scheduler: install ## Run the recurring-schedule firing loop (python -m producers scheduler)
	$(PY) -m producers scheduler

loadtest: stack-up ## Load-test the send API (spawns it; prints requests/s)
	$(PY) -m herald.bench.loadtest --spawn -c 32 -d 10

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install ## mypy on the packages
	$(VENV)/bin/mypy

check: lint typecheck test-unit ## Lint, type-check and unit tests

clean: ## Remove the venv and the run directory (Kafka and Cassandra data)
	-$(PY) -m infra.stack down
	rm -rf $(VENV) .run
