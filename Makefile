# One entry point for humans and CI. Every target builds .venv from the hashed lock files first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: help native run test lint format bench bench-ladder bench-prefetch soak export-openapi lock clean

help:
	@echo "make native | run | test | lint | format | bench | bench-ladder | bench-prefetch | soak | export-openapi | lock | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

# Runtime environment: exactly the pinned, hashed runtime lock. An install drops the compiled engine's
# manifest: mypyc built in the types of the libraries it saw, so the next target compiles it again.
$(VENV)/.runtime: requirements.lock pyproject.toml | $(BIN)/python
	rm -f $(VENV)/cds-native/manifest.json
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Development environment: runtime + test and lint tools (a superset lock, same pins). After the runtime
# one, which installed the project, so that `make -j` never runs two pip installs into one venv at once.
# It only adds tools the service does not import, so the compiled engine stays valid.
$(VENV)/.dev: requirements-dev.lock pyproject.toml | $(VENV)/.runtime
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

# The compiled engine (cds_service/native.py): rebuilt when a file of the package, pyproject.toml, mypyc
# or the installed libraries changed, in about 40 s; otherwise a check of the manifest's hashes.
# CDS_NATIVE=off runs the same source interpreted. Each target runs it as its first step, once its venv
# is complete (concurrent runs take turns on a lock).
NATIVE := $(BIN)/python scripts/build_native.py --if-stale

native: $(VENV)/.runtime
	$(NATIVE)

run: $(VENV)/.runtime
	$(NATIVE)
	CDS_ENV=development CDS_AUTH=$${CDS_AUTH:-off} $(BIN)/cds-service serve --host 127.0.0.1 --port $(PORT)

test: $(VENV)/.dev
	$(NATIVE)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check cds_service tests scripts
	$(BIN)/ruff format --check cds_service tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff format cds_service tests scripts
	$(BIN)/ruff check --fix cds_service tests scripts

bench: $(VENV)/.dev
	$(NATIVE)
	$(BIN)/python scripts/bench.py

bench-ladder: $(VENV)/.dev
	$(NATIVE)
	$(BIN)/python scripts/bench_ladder.py

bench-prefetch: $(VENV)/.dev
	$(NATIVE)
	$(BIN)/python scripts/bench_prefetch.py

soak: $(VENV)/.dev
	$(NATIVE)
	$(BIN)/python scripts/soak.py

export-openapi: $(VENV)/.runtime
	$(BIN)/cds-service export-openapi --output openapi/openapi.json

# Re-resolve the pins (needs network); commit both lock files.
lock:
	$(PYTHON) -m pip install --quiet "uv==0.13.8"
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --extra native --python-version 3.11 --generate-hashes -o requirements-dev.lock
	$(PYTHON) -m uv pip compile pyproject.toml --extra native --python-version 3.11 --generate-hashes -c requirements-dev.lock -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
