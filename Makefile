# Developer entry points. `make install` sets up .venv (CPU torch here; PyPI's CUDA build of the same
# torch version on a machine with a GPU), `make test` runs the fast CPU suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow lint format bench

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install -c constraints/cpu.txt -e '.[dev,dataset,train,tensorboard]'

# The main job on the examples: download the weights once (10.5 GB), then interpolate a bouncing ball.
demo: install
	$(VENV)/bin/toonctl weights fetch
	mkdir -p out
	$(VENV)/bin/toonctl interpolate examples/bouncing-ball/0.png examples/bouncing-ball/1.png \
		examples/bouncing-ball/2.png -p "$$(cat examples/bouncing-ball/prompt.txt)" -o out/bouncing-ball.mp4

test:
	$(PY) -m pytest -q

test-slow:
	RUN_SLOW=1 $(PY) -m pytest -q -m slow

lint:
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

# Benchmarks print numbers (no pass/fail): per-stage steady-state times beside the official code's (issue 15),
# per-stage time, FLOPs and memory of one sample (random
# full-size weights; reduced size on the CPU), load time/RSS vs torch.load (writes a 10.5 GB file to
# BENCH_DIR once), a one-shot run with and without prefetching the mapped weights, the decode's peak memory
# whole and in slices, CLI start-up time.
BENCH_DIR ?= /tmp/toonctl-bench
bench:
	$(PY) benchmarks/bench_stages.py
	$(PY) benchmarks/bench_sample.py
	$(PY) benchmarks/bench_load.py --dir $(BENCH_DIR)
	$(PY) benchmarks/bench_first_call.py --dir $(BENCH_DIR)
	$(PY) benchmarks/bench_decode_memory.py --size 160x256
	$(PY) benchmarks/bench_startup.py

format:
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests
