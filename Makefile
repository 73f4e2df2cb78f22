# Everything CI and a fresh machine need is here: if a step isn't in this file, it doesn't exist.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint demo bench chaos schema clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q --durations=25

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo

bench: $(STAMP)
	$(BIN)/python -m bench

# docs/manifest.schema.json from the manifest's models (tests/test_manifest_schema.py fails until it is rerun)
schema: $(STAMP)
	$(BIN)/python -m pipeline.schema

# Not part of `test`: ~10-15 min of SIGKILLs against the emulator (CHAOS_KILLS=N, CHAOS_SEED=N to change).
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache out
