# The README's two commands are `make run` and `make test`; each sets up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
PYTHON ?= python3

.PHONY: run test lint fmt migrate bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The local CPU wheel first, so nothing below pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[service,dev]'
	touch $(STAMP)

venv: $(STAMP)

## run: the main job on the embedded default -- starts `clr-sweep serve` (API + worker on SQLite,
## no servers), runs a range test on the digits MLP through the API with a progress bar, prints
## the suggested bounds, then trains the MLP with CLR between them (4 cycles), prints how it ended
## and writes both plots the API draws; then stops the service
run: $(STAMP)
	$(VENV)/bin/clr-sweep training submit --embedded --range-test --workload digits_mlp --range-test-plot range_test.png --plot training.png --output training.json

## test: the test suite (what .ci/run runs)
test: $(STAMP)
	$(VENV)/bin/pytest -n 2 -q -m "not serial"
	$(VENV)/bin/pytest -q -m serial

## lint: ruff, mypy strict, import-linter, and `alembic check` (models match migrations)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	@tmp=$$(mktemp -d) && export CLR_DATABASE_URL="sqlite:///$$tmp/check.db" && \
	  $(VENV)/bin/alembic upgrade head && $(VENV)/bin/alembic check; \
	  status=$$?; rm -rf "$$tmp"; exit $$status

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## migrate: bring the database (CLR_DATABASE_URL, or the embedded SQLite file) to head
migrate: $(STAMP)
	$(VENV)/bin/alembic upgrade head

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[service,bench]'
	touch $(BENCH_STAMP)

## bench: the measurements (ratios within one run); long, not part of the tests
bench: $(BENCH_STAMP)
	$(PY) -m bench.overhead
	$(PY) -m bench.scheduler_step
	$(PY) -m bench.suggestion_quality
	$(PY) -m bench.verified_bounds
	$(PY) -m bench.series_storage
	$(PY) -m bench.train_overhead
	$(PY) -m bench.artifacts
	$(PY) -m bench.api_throughput
	$(PY) -m bench.overload
	$(PY) -m bench.api_memory
	$(PY) -m bench.submit_latency
	$(PY) -m bench.worker_scaling
	$(PY) -m bench.sweep_scaling
	$(PY) -m bench.client
	$(PY) -m bench.duplicates
	$(PY) -m bench.cold_start
	$(PY) -m bench.dashboard
	$(PY) -m bench.fused
	$(PY) -m bench.verify_fused
	$(PY) -m bench.fused_sweep

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .clr-sweep
