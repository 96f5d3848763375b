# `make train` and `make test` set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: train test test-fast ui docs docs-serve clean bench bench-accuracy

# torch first, pinned: it is a local CPU wheel here; an unpinned torch pulls gigabytes of CUDA packages.
# Byte-compiled on every core afterwards: pip compiles one file at a time (~45 s of a fresh set-up's ~70 s here),
# and the compiled files must exist up front, since PYTHONDONTWRITEBYTECODE (set on this project's machines) stops
# Python from caching what it compiles at import. As with pip, a file that does not compile is left alone (torch
# ships one in Python 3.12 syntax).
$(BIN)/pipeline-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile torch==2.13.0
	$(BIN)/pip install --quiet --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $@

train: $(BIN)/pipeline-installed
	$(BIN)/python -m pipeline.train $(ARGS)

# pytest-xdist workers, each computing on one thread (tests/conftest.py): one per core and one more, since many
# tests wait on a server or a retry rather than compute. --dist loadgroup keeps the tests of one MLflow server
# (xdist_group) on one worker, so each server starts once.
WORKERS = $(shell $(PYTHON) -c "import os; print(os.cpu_count() + 1)")

test: $(BIN)/pipeline-installed
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(ARGS)

# The inner loop (under a minute): every test that starts no process (the `slow` marker marks those).
test-fast: $(BIN)/pipeline-installed
	$(BIN)/python -m pytest -n auto -m "not slow" $(ARGS)

# Speed and memory (bench/RESULTS.md): steps against a raw PyTorch loop in both precisions, then scaling.
bench: $(BIN)/pipeline-installed
	$(BIN)/python bench/train_speed.py --precision 32-true bf16-mixed
	$(BIN)/python bench/scaling.py

# The accuracy benchmark needs statsforecast (the `bench` extra), which pins pandas below 3: its own environment.
BENCH_BIN := .venv-bench/bin

$(BENCH_BIN)/pipeline-installed: pyproject.toml
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv .venv-bench
	$(BENCH_BIN)/pip install --quiet --upgrade pip
	$(BENCH_BIN)/pip install --quiet --no-compile torch==2.13.0
	$(BENCH_BIN)/pip install --quiet --no-compile -e ".[bench]"
	$(BENCH_BIN)/python -m compileall -q -j 0 .venv-bench/lib > /dev/null 2>&1 || true
	touch $@

bench-accuracy: $(BENCH_BIN)/pipeline-installed
	$(BENCH_BIN)/python bench/accuracy.py $(ARGS)

# MLflow 3's UI opens in its GenAI mode until "Model training" is picked; this link picks it.
ui: $(BIN)/pipeline-installed
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db

# The docs site (mkdocs.yml, docs/): built with every link checked, as the tests build it; served on 127.0.0.1.
docs: $(BIN)/pipeline-installed
	$(BIN)/python docs/make_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(BIN)/pipeline-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

clean:
	rm -rf site outputs/runs outputs/multiruns outputs/exports outputs/evaluations outputs/forecasts outputs/registrations outputs/mlflow.db outputs/mlartifacts
