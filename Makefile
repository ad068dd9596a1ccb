# Everything touchflow needs is installed by these targets into .venv (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: venv demo test test-quick lint test-faults fmt clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"touchflow needs Python 3.11, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded stack: local broker + Faust worker + chDB + synthetic traffic.
demo: $(STAMP)
	$(BIN)/touchflow demo $(ARGS)

## Lint, type-check, then the whole test suite (quick fault tests included; full ones: make test-faults).
test: $(STAMP) lint
	$(BIN)/pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline agents sinks tests bench
	$(BIN)/ruff format --check pipeline agents sinks tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix pipeline agents sinks tests bench
	$(BIN)/ruff format pipeline agents sinks tests bench

## Performance benchmark (~5-10 min on 2 cores; ARGS="--quick" for a smoke run): see docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

test-faults: $(STAMP)
	$(BIN)/pytest -m faults $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
