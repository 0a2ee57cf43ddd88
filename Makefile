# Developer entry points. `make install` sets up .venv (CPU torch here; PyPI's CUDA build of the same
# torch version on a machine with a GPU), `make test` runs the fast CPU suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install test test-slow lint format bench

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install -c constraints/cpu.txt -e '.[dev]'

test:
	$(PY) -m pytest -q

test-slow:
	RUN_SLOW=1 $(PY) -m pytest -q -m slow

lint:
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format:
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests
