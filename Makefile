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
	$(BIN)/python -m pip install -q --no-compile -c requirements.lock -e '.[dev]'
	@# Byte-compiled on every core: pip compiles one file at a time (150 of a 250 s install on
	@# 2 cores), and with PYTHONDONTWRITEBYTECODE set nothing would be cached on import.
	@# torch's py312_intrinsics.py is Python 3.12 syntax, never imported on 3.11 (pip skips it too).
	$(BIN)/python -m compileall -q -j 0 -x 'py312_intrinsics' \
		"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
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
	$(BIN)/python -m pytest -m integration --durations=25 $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
