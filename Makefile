# tfp: every target does its own set-up. `make demo` and `make test` work on a fresh clone.
# `make install` is the developer's install: the runtime lock, then the dev lock and tfp with its
# [dev] extra (tfp_dev, the suite, the linter). The image installs the runtime lock alone.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast coverage lint demo airflow train-linkage linkage-eval bench bench-smoke bench-backfill \
        bench-backfill-smoke profile clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@# the dev lock on top: it pins every dev package the runtime lock does not, so --no-deps is whole
	$(BIN)/pip install --quiet --no-deps -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e '.[dev]'
	@touch $(STAMP)

lint: install
	$(BIN)/ruff check .

# pytest on every core (pytest-xdist); tests that start an Airflow stack share one xdist group, so
# at most one stack runs at a time. The wall time is printed at the end.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadgroup
define timed_pytest
	@start=$$(date +%s); $(PYTEST) $(1); rc=$$?; \
	  echo "$@: pytest wall time $$(( $$(date +%s) - start )) s"; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc
endef

# The whole suite, slow end-to-end tests included, as CI runs it; prints the 15 slowest tests.
# PostgreSQL variants run when TFP_TEST_POSTGRES_URL is set (see README) and are skipped with a
# reason otherwise.
test: install lint
	$(call timed_pytest,--durations=15)

# What a developer runs on every change: everything not marked slow (no whole `tfp run` night, no
# Airflow stack), in about two minutes on two cores.
test-fast: install
	$(call timed_pytest,-m "not slow")

# Line coverage of tfp and tfp_dev by the fast subset (code run in `tfp run` subprocesses is not counted).
coverage: install
	$(PYTEST) -m "not slow" --cov=tfp --cov=tfp_dev --cov-report=term

demo: install
	$(BIN)/tfp demo

# A real local Airflow (tfp airflow: UI on http://127.0.0.1:$(PORT), scheduler, dag-processor, triggerer)
# on a demo borough generated into var/airflow-demo the first time and reused after; Ctrl-C stops it.
PORT ?= 8080
airflow: install
	$(BIN)/python scripts/airflow_demo.py --port $(PORT)

train-linkage: install
	$(BIN)/python -m tfp_dev.link_training --families 3000 --seed 20240601

bench: install
	$(BIN)/python -m tfp_dev.bench
	$(BIN)/python -m tfp_dev.linkage_eval

# tfp link and Splink used directly on public labelled sets and an unseen-settings generated set;
# writes bench/linkage-eval.md (table) and bench/linkage-eval.png (precision-recall curves).
linkage-eval: install
	$(BIN)/python -m tfp_dev.linkage_eval

# What CI runs: one 2,000-family night with both peers, to show the benchmark works (no timing is checked).
bench-smoke: install
	$(BIN)/python -m tfp_dev.bench --sizes 2000 --repeats 1 --out var/bench-smoke

# A backfill through a real scheduler: NIGHTS consecutive nights of a FAMILIES-family borough with `airflow backfill
# create` (LocalExecutor, SQLite metadata), then `tfp run` for each night, every delivered file compared byte for byte;
# writes bench/backfill.json and bench/backfill.md (with the 365-night figure, extrapolated).
NIGHTS   ?= 7
FAMILIES ?= 2000
bench-backfill: install
	$(BIN)/python -m tfp_dev.bench_backfill --nights $(NIGHTS) --families $(FAMILIES)

# What CI runs: the 7-night 2,000-family backfill into var/, not bench/ (no timing is checked; it fails when a run
# fails or the deliveries differ).
bench-backfill-smoke: install
	$(BIN)/python -m tfp_dev.bench_backfill --nights 7 --families 2000 --out var/bench-backfill-smoke \
	  --work var/bench-backfill-smoke/work

# Where a 50,000-family night's time goes: one run under py-spy (installed here, not a runtime dependency).
profile: install
	$(BIN)/pip install --quiet py-spy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tfp_dev.bench_profile --families 50000

clean:
	rm -rf $(VENV) var demo .pytest_cache
