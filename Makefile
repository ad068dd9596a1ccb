# Everything touchflow needs is installed by these targets into .venv (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# The domain core compiled by Cython (docs/compiled-core.md): rebuilt when its sources change.
CORE     := rfm lifecycle stages events state engine pii validation codec rows
COMPILED := pipeline/_compiled_core.json

.PHONY: venv demo test test-quick lint test-faults fmt clean bench chromium interpreted

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"touchflow needs Python 3.11, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(COMPILED): $(STAMP) pipeline/compiled_core.py pipeline/core_loader.py pipeline/avro_prebuilt.py pipeline/rules.py pipeline/avro_reader.py pipeline/avro_writer.py pipeline/codec.py $(wildcard schemas/*) $(foreach m,$(CORE),pipeline/$(m).py pipeline/$(m).pxd)
	$(BIN)/python -m pipeline.compiled_core

venv: $(STAMP) $(COMPILED)

## Back to the uncompiled core modules (make venv builds them again).
interpreted: $(STAMP)
	$(BIN)/python -m pipeline.compiled_core --remove

## The main job on the embedded stack: local broker + Faust worker + chDB + synthetic traffic.
demo: $(STAMP) $(COMPILED)
	$(BIN)/touchflow demo $(ARGS)

## Lint, type-check, then the whole test suite on the compiled core (quick fault tests
## included; full ones: make test-faults), then the unit tests on the uncompiled core.
test: $(STAMP) $(COMPILED) lint chromium
	$(BIN)/pytest $(ARGS)
	TOUCHFLOW_INTERPRETED=1 $(BIN)/pytest tests/unit -q

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
bench: $(STAMP) $(COMPILED)
	$(BIN)/python -m bench $(ARGS)

## The fault tests at full size (200k events with kill -9 x3, 30 s broker stop, 100k with 1% poison);
## the other fault tests have one size and run in `make test`. About 15 min on 2 cores.
test-faults: $(STAMP) $(COMPILED)
	$(BIN)/pytest tests/faults -m faults $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
