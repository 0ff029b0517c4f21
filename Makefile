# d1ops — every target that needs tools installs them first (idempotent, skipped when up to date).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
D1OPS := $(BIN)/d1ops

.PHONY: install test test-fast lint migrate-dev migrate-staging migrate-prod backup bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The whole suite, real wrangler included; it ends with the number of wrangler processes it started.
test: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/python -m pytest -n 3 -q

# The tests that start no wrangler process (under a minute): logic, parsing, SQL, the CLI's refusals.
test-fast: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/python -m pytest -q -m "not wrangler"

lint: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/ruff format --check d1ops tests bench
	$(BIN)/mypy d1ops

migrate-dev: install
	$(D1OPS) migrate dev

migrate-staging: install
	$(D1OPS) promote --to staging

migrate-prod: install
	$(D1OPS) promote --to production

backup: install
	$(D1OPS) backup --env $(or $(ENV),dev)

bench: install
	$(BIN)/python bench/benchmark.py

clean:
	rm -rf $(VENV) node_modules .wrangler
