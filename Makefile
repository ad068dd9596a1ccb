# Everything touchflow needs is installed by these targets into .venv (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: venv demo test test-quick lint test-faults fmt clean bench chromium

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
test: $(STAMP) lint chromium
	$(BIN)/pytest $(ARGS)

## Debian's Chromium for the dashboard's browser tests (a no-op when it is there).
chromium:
	sh deploy/dev/ensure-chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check pipeline agents sinks tests bench examples
	$(BIN)/ruff format --check pipeline agents sinks tests bench examples
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix pipeline agents sinks tests bench examples
	$(BIN)/ruff format pipeline agents sinks tests bench examples

## Performance benchmark (~9 min on 2 cores; ARGS="--quick" for a smoke run): see docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

## The fault tests at full size (200k events with kill -9 x3, 30 s broker stop, 100k with 1% poison);
## the other fault tests have one size and run in `make test`. About 15 min on 2 cores.
test-faults: $(STAMP)
	$(BIN)/pytest tests/faults -m faults $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
