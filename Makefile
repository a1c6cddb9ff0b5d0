# The README's first two commands: `make tutorial` and `make test`. Both build .venv if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: tutorial test test-slow lint format bench bench-all clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the CPU build first, so nothing pulls CUDA wheels
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# runs/tutorial is regenerated from scratch each time (probdiff itself never overwrites a run)
tutorial: $(STAMP)
	rm -rf runs/tutorial
	$(BIN)/probdiff tutorial --out runs/tutorial --quick

# two worker processes (one per core here), each test file on one worker so module fixtures
# are built once; JAX keeps compiled programs in .cache/jax between runs
WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n $(WORKERS) --dist loadfile

# ruff (lint and format) over everything, mypy over the engine's typed surface (pyproject.toml)
lint: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# one table (and bench.json): probdiff against hand-written loops and peer libraries
bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python bench.py --json ../bench.json

# the per-topic scripts the README's tables come from
bench-all: bench
	$(BIN)/python benchmarks/gmm_bench.py
	$(BIN)/python benchmarks/vae_bench.py
	$(BIN)/python benchmarks/ddpm_bench.py
	$(BIN)/python benchmarks/ddpm_estimators.py
	$(BIN)/python benchmarks/sde_samplers.py
	$(BIN)/python benchmarks/usermodel_bench.py
	$(BIN)/python benchmarks/memory_bench.py

clean:
	rm -rf runs .pytest_cache
