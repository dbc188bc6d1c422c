# ClinPredict. `make run` shows it working; `make test` proves it. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 2

.PHONY: run serve test lint bench clean-var help

help:
	@echo "make run    - install, migrate, bootstrap the demo and serve on http://127.0.0.1:$(PORT)"
	@echo "make test   - install test tools and run lint, the import contract and the whole test suite"
	@echo "make serve  - production-like gunicorn ($(WEB_CONCURRENCY) workers) on 127.0.0.1:$(PORT), no demo bootstrap"
	@echo "make lint   - ruff and the import contract"
	@echo "make bench  - run benchmarks/ and regenerate docs/benchmarks.md"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ClinPredict needs Python 3.11 (set PYTHON=/path/to/python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps: reinstall only when a requirements file changes, so a second `make run` does not reinstall.
$(VENV)/.ml-installed: requirements/base.txt requirements/ml.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements/ml.txt
	@touch $@

$(VENV)/.dev-installed: requirements/base.txt requirements/ml.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	@touch $@ $(VENV)/.ml-installed

# The FHIR test server (sekmet-fhir) gets its own venv: its antlr4 runtime conflicts with dvc's (see the file).
$(VENV)/fhir-server/.installed: requirements/fhir-server.txt | $(BIN)/python
	$(BIN)/python -m venv $(VENV)/fhir-server
	$(VENV)/fhir-server/bin/python -m pip install --quiet -r requirements/fhir-server.txt
	@touch $@

run: $(VENV)/.ml-installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap_demo
	@echo ""
	@echo "ClinPredict is starting on http://127.0.0.1:$(PORT)/"
	@echo "  Clinician pages: sign in as 'clinician' (password above, or CLINPREDICT_DEMO_PASSWORD)"
	@echo "  Admin (model promotion): http://127.0.0.1:$(PORT)/admin/ as 'modeladmin'"
	@echo "  API: POST /o/token/ with the demo client credentials, then POST /api/v1/predictions"
	@echo ""
	$(BIN)/python manage.py runserver 127.0.0.1:$(PORT) --noreload

serve: $(VENV)/.ml-installed
	@test -n "$$SECRET_KEY" || { echo "make serve needs SECRET_KEY (and DATABASE_URL) in the environment"; exit 2; }
	DJANGO_SETTINGS_MODULE=clinpredict.settings.production ALLOWED_HOSTS=$${ALLOWED_HOSTS:-127.0.0.1,localhost} \
	  SECURE_SSL_REDIRECT=$${SECURE_SSL_REDIRECT:-false} $(BIN)/python manage.py collectstatic --noinput -v 0
	DJANGO_SETTINGS_MODULE=clinpredict.settings.production ALLOWED_HOSTS=$${ALLOWED_HOSTS:-127.0.0.1,localhost} \
	  SECURE_SSL_REDIRECT=$${SECURE_SSL_REDIRECT:-false} \
	  PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/var/prometheus-web} \
	  $(BIN)/gunicorn clinpredict.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:$(PORT) --workers $(WEB_CONCURRENCY) \
	  --worker-tmp-dir /dev/shm

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: $(VENV)/.dev-installed $(VENV)/fhir-server/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

bench: $(VENV)/.dev-installed $(VENV)/fhir-server/.installed
	$(BIN)/python -m benchmarks

clean-var:
	rm -rf var/
