# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch; a looser pin would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
# What `make run` installs: the API, `spotlight up` and a worker. Add s3 for an s3:// store
# (`make run RUN_EXTRAS=server,worker,s3`). `make test` and `make lint` install everything ([all]).
RUN_EXTRAS ?= server,worker
# Processes `make test` runs the suite in (pytest-xdist): 2, CI's cores. `auto` takes one per core.
TEST_WORKERS ?= 2

.PHONY: install install-run run test lint openapi bench-quality bench-speed bench-upload bench-load clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[$(RUN_EXTRAS)]'
	touch $@

# The test tools, validators and test-only servers (pytest, ruff, mypy, SeaweedFS, ...) on top.
$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/pip install -q -e '.[all]'
	touch $@

install-run: $(VENV)/.installed-run

install: $(VENV)/.installed

run: install-run
	$(BIN)/spotlight up --host $(HOST) --port $(PORT) --workers $(WORKERS)

# The linter, the format check and the type checker first (seconds), then the suite, in
# TEST_WORKERS processes: most tests wait on servers and workers they start, so two processes use
# both cores. Each file runs whole in one process (its module fixtures are built once), slow ones first
# (tests/conftest.py; docs/testing.md). `TEST_WORKERS=0` runs it in this process alone.
test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Lint, format check and type check, configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

openapi: install
	$(BIN)/spotlight openapi --output openapi/openapi.json

bench-quality: install
	$(BIN)/python -m bench.quality

bench-speed: install
	$(BIN)/python -m bench.speed

bench-upload: install
	$(BIN)/python -m bench.upload

bench-load: install
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) .pytest_cache
