# Developer commands. `make run` and `make test` each set up what they need first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: setup run test test-fast lint bench

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0 || $(PIP) install "torch>=2.2"
	$(PIP) install -q -e ".[dev]"

run: setup
	$(PYTHON) -m rdmm_lightning.demo

test: setup
	$(PYTHON) -m pytest -q -ra

test-fast: setup
	$(PYTHON) -m pytest -q -ra -m "not slow"

lint:
	ruff check rdmm_lightning datamodules tests benchmarks

bench:
	$(PYTHON) benchmarks/shooting.py
