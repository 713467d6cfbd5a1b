# odc developer interface. `make run` and `make test` work on a fresh Debian machine with Python 3.11,
# Java 17 and Maven: they install whatever is missing (venv, pinned Python deps, Kafka jars from Maven
# Central, PostgreSQL 15 + PostGIS from Debian's packages).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_ROOT ?= .local/run

.PHONY: help run down status test test-unit test-integration test-faults fuzz lint bench acceptance deps lock clean

help:
	@echo "make run      install what is missing, start Kafka, PostGIS and the three services, load the samples"
	@echo "make down     stop everything started by make run"
	@echo "make status   what is running, restarts by the supervisor (JSON); exits non-zero when something is down"
	@echo "make test     the whole test suite, on its own throwaway Kafka and PostGIS"
	@echo "make lint     ruff, mypy (strict on every service), import-linter contracts (.ci/run runs it before the tests)"
	@echo "make test-faults  only the fault-injection tests (kill -9, broker/database down), with reconciliation"
	@echo "make fuzz     coverage-guided fuzzing (atheris) of every decoder and validator, FUZZ_SECONDS each"
	@echo "make bench    end-to-end throughput and latency on real data; appends to docs/benchmarks.md"
	@echo "make acceptance  every real file of ../shared/data/real (or DATA=folder) through odc send on a throwaway stack; writes docs/data-quality.md"

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (odc needs Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

deps: $(STAMP)

# Regenerate the lock from pyproject.toml's pins in a clean venv.
lock:
	rm -rf /tmp/odc-lock-venv && $(PYTHON) -m venv /tmp/odc-lock-venv
	/tmp/odc-lock-venv/bin/pip install --quiet -e '.[dev]'
	/tmp/odc-lock-venv/bin/pip freeze --exclude-editable | grep -v '^odc' > requirements.lock

run: $(STAMP)
	$(PY) -m deploy.local run --root $(RUN_ROOT)

down:
	@test -x $(PY) && $(PY) -m deploy.local down --root $(RUN_ROOT) || true

# exits non-zero when anything is down (a service, the supervisor, Kafka, PostgreSQL)
status: $(STAMP)
	@$(PY) -m deploy.local status --root $(RUN_ROOT) --with-odc

test: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m integration

lint: $(STAMP)
	$(VENV)/bin/ruff check services deploy tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-faults: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m faults

FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	@for t in change_event geometry structured_geometry source_files attributes signatures; do \
	  echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; $(PY) -m fuzz.run $$t $(FUZZ_SECONDS) || exit 1; done

bench: $(STAMP)
	$(PY) -m benchmarks.suite $(BENCH_ARGS)

acceptance: $(STAMP)
	$(PY) -m acceptance $(if $(DATA),--data $(DATA))

clean: down
	rm -rf .local $(VENV)
