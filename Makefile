# MedRay: `make demo` and `make test` set up .venv themselves (Python 3.11 required).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-integration lint format clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/medray demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Unit tests on every core (pytest-xdist: each worker has its own MEDRAY_HOME); the
# integration tests in one process, which shares one local Ray cluster between them.
test: lint test-unit test-integration

test-unit: install
	$(BIN)/python -m pytest -m unit -n auto --durations=10 $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -m integration --durations=15 $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
