# One-command set-up: every target creates the virtualenv and installs what it needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install test test-faults demo ui validate bench clean

$(BIN)/.installed: pyproject.toml
	@PYTHON=$(PYTHON) bash scripts/check-system.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed
	@PYTHON=$(PYTHON) bash scripts/check-system.sh

# Dagster's storage: PostgreSQL when DAGSTER_PG_HOST is set (deploy/dagster.yaml), else embedded SQLite.
INSTANCE_YAML := $(if $(DAGSTER_PG_HOST),deploy/dagster.yaml,dagster.yaml)

$(DAGSTER_HOME)/dagster.yaml: $(INSTANCE_YAML)
	mkdir -p $(DAGSTER_HOME)
	cp $(INSTANCE_YAML) $@

# One worker per core, each with its own clusters; a file stays on one worker (its module fixtures).
TEST_WORKERS ?= auto

test: install
	@bash scripts/check-system.sh test
	$(BIN)/pytest --numprocesses $(TEST_WORKERS) --dist loadfile

# The fault, hostile-input and secrets suite on its own (make test runs it too).
test-faults: install
	@bash scripts/check-system.sh test
	$(BIN)/pytest wehub_backup_tests/test_faults.py wehub_backup_tests/test_source_faults.py \
		wehub_backup_tests/test_hostile_input.py wehub_backup_tests/test_secrets.py

demo: install $(DAGSTER_HOME)/dagster.yaml
	@bash scripts/check-system.sh demo
	$(BIN)/python -m wehub_backup_tests.demo

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
