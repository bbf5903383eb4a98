# Every target bootstraps .venv itself, so a fresh clone needs only Python 3.10+ and the registries.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 3000
# The local Dagster instance for run/materialize (tests make their own; they must not inherit it).
DAGSTER_HOME ?= $(CURDIR)/.dagster_home

RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-busy bench lint materialize init clean chromium redis

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

# Dagster instance (SQLite, under .dagster_home/) and app DB (SQLite, under data/), made if missing.
init: $(RUN_STAMP)
	DAGSTER_HOME=$(DAGSTER_HOME) $(PY) -m study_query_dagster.cli init

run: init
	DAGSTER_HOME=$(DAGSTER_HOME) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

materialize: init
	DAGSTER_HOME=$(DAGSTER_HOME) $(PY) -m study_query_dagster.cli materialize

# Chromium (Debian's) is needed by the end-to-end UI test; installed where we can (root + apt).
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the UI test will be skipped"; \
	fi

# Redis (Debian's redis-server) is the Celery broker of the scale-out test, which starts and
# stops its own server; installed where we can (root + apt), else that test is skipped.
redis:
	@if ! command -v redis-server >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
		|| echo "warning: could not install redis-server; the Celery scale-out test will be skipped"; \
	fi

# Two pytest workers (xdist) by default; `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2

test: $(DEV_STAMP) chromium redis
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The same suite beside two CPU-burning processes: no test may depend on timing or load.
test-busy: $(DEV_STAMP) chromium redis
	$(PY) -m tests.support.busy --burners 2 -- $(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: $(DEV_STAMP)
	$(PY) -m benchmarks

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check study_query_dagster tests benchmarks
	$(VENV)/bin/ruff format --check study_query_dagster tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
