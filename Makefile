# ClinPredict. `make run` shows it working; `make test` proves it. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 2

.PHONY: run serve db-setup test lint bench clean-var help

help:
	@echo "make run    - install, migrate, bootstrap the demo and serve on http://127.0.0.1:$(PORT)"
	@echo "make test   - install test tools and run lint, the import contract and the whole test suite"
	@echo "make serve  - production-like gunicorn ($(WEB_CONCURRENCY) workers) on 127.0.0.1:$(PORT), no demo bootstrap"
	@echo "make db-setup - create the database owner and application roles, migrate as the owner, grant the app role"
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

# Production-like: the application role (never the owner or a superuser: the app refuses to start as one), Redis as
# the shared cache. `make db-setup` creates the roles and migrates first. SECRET_KEY or SECRET_KEY_FILE is required.
DB_HOST ?= 127.0.0.1
DB_NAME ?= clinpredict
DB_OWNER ?= clinpredict_owner
DB_APP ?= clinpredict_app
DB_SUPERUSER_URL ?= postgres://postgres@$(DB_HOST):5432/$(DB_NAME)
SERVE_ENV = DJANGO_SETTINGS_MODULE=clinpredict.settings.production ALLOWED_HOSTS=$${ALLOWED_HOSTS:-127.0.0.1,localhost} \
	  SECURE_SSL_REDIRECT=$${SECURE_SSL_REDIRECT:-false} \
	  DATABASE_URL=$${DATABASE_URL:-postgres://$(DB_APP)@$(DB_HOST):5432/$(DB_NAME)} \
	  CACHE_URL=$${CACHE_URL:-redis://127.0.0.1:6379/1}

serve: $(VENV)/.ml-installed
	@test -n "$$SECRET_KEY$$SECRET_KEY_FILE" || { echo "make serve needs SECRET_KEY or SECRET_KEY_FILE"; exit 2; }
	$(SERVE_ENV) $(BIN)/python manage.py collectstatic --noinput -v 0
	$(SERVE_ENV) PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-$(CURDIR)/var/prometheus-web} \
	  $(BIN)/gunicorn clinpredict.wsgi:application -c gunicorn.conf.py --bind 127.0.0.1:$(PORT) --workers $(WEB_CONCURRENCY) \
	  --worker-tmp-dir /dev/shm

# The two database roles (docs/security.md): as a superuser, create the owner and the application role; as the owner,
# migrate and give the application role its rights. Safe to rerun; run it again after every upgrade. Passwords:
# DB_OWNER_PASSWORD_FILE / DB_APP_PASSWORD_FILE (optional with trust or peer authentication).
db-setup: $(VENV)/.ml-installed
	DJANGO_SETTINGS_MODULE=clinpredict.settings.local DATABASE_URL=$(DB_SUPERUSER_URL) \
	  $(BIN)/python manage.py setup_database_roles --owner $(DB_OWNER) --app $(DB_APP) \
	  $(if $(DB_OWNER_PASSWORD_FILE),--owner-password-file $(DB_OWNER_PASSWORD_FILE)) \
	  $(if $(DB_APP_PASSWORD_FILE),--app-password-file $(DB_APP_PASSWORD_FILE))
	DJANGO_SETTINGS_MODULE=clinpredict.settings.local DATABASE_URL=postgres://$(DB_OWNER)@$(DB_HOST):5432/$(DB_NAME) \
	  $(if $(DB_OWNER_PASSWORD_FILE),DATABASE_PASSWORD_FILE=$(DB_OWNER_PASSWORD_FILE)) \
	  $(BIN)/python manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=clinpredict.settings.local DATABASE_URL=postgres://$(DB_OWNER)@$(DB_HOST):5432/$(DB_NAME) \
	  $(if $(DB_OWNER_PASSWORD_FILE),DATABASE_PASSWORD_FILE=$(DB_OWNER_PASSWORD_FILE)) \
	  $(BIN)/python manage.py grant_app_role --app $(DB_APP)

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
