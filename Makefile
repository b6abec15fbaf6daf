# Developer commands. `make run` and `make test` each set up what they need first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: setup run demo test test-fast docs-check lint bench

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0 || $(PIP) install "torch>=2.2"
	$(PIP) install -q -e ".[dev]"

# The main job: a short RDMM-net training on the built-in synthetic 2D shapes (a few minutes on
# 2 CPU cores); prints the `rdmm infer` command to try the checkpoint it writes.
run: setup
	$(PYTHON) train.py

# Shoot a generated 2D and 3D example with vSVF, LDDMM and RDMM; figures in outputs/demo/.
demo: setup
	$(PYTHON) -m rdmm_lightning.cli.demo

test: setup
	$(PYTHON) -m pytest -q -ra

test-fast: setup
	$(PYTHON) -m pytest -q -ra -m "not slow"

# Run every command of the README's shell blocks, shortened where they train or register
# (tools/docs_check.py, where a table says how each is run; CI: tests/test_readme_commands.py).
docs-check: setup
	$(PYTHON) tools/docs_check.py

lint:
	ruff check rdmm_lightning datamodules tests benchmarks train.py tools
	ruff format --check rdmm_lightning datamodules tests benchmarks train.py tools

bench:
	$(PYTHON) benchmarks/shooting.py
