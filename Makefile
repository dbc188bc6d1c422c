# ClinPredict. `make run` shows it working; `make test` proves it. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 2

# Lock files: requirements/*.in are the human-edited direct pins; `make lock` compiles each into requirements/*.txt
# with every transitive dependency pinned and hashed, for CPython 3.11 on x86_64 Linux (glibc >= 2.28). The layers
# agree: ml.txt is resolved within base.txt's versions, dev.txt within ml.txt's, bench-mlflow.txt within base.txt's.
# Every install below is `pip install --require-hashes -r <lock>`: a file whose hash differs stops it, naming it.
LOCK_ARGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" $(LOCK_ARGS)
# $(call lock,IN,OUT[,LOCK whose versions OUT must keep])
lock = $(UV_COMPILE) $(1) -o $(2) $(if $(3),-c $(3))
PIP_INSTALL = python -m pip install --quiet --require-hashes
LOCKS := $(foreach f,pip base ml dev fhir-server bench-mlflow,requirements/$(f).txt)

.PHONY: run serve db-setup test lint audit lock bench clean-var help docker-check

help:
	@echo "make run    - install, migrate, bootstrap the demo and serve on http://127.0.0.1:$(PORT)"
	@echo "make test   - install test tools and run lint, the import contract and the whole test suite"
	@echo "make serve  - production-like gunicorn ($(WEB_CONCURRENCY) workers) on 127.0.0.1:$(PORT), no demo bootstrap"
	@echo "make db-setup - create the database owner and application roles, migrate as the owner, grant the app role"
	@echo "make lint   - ruff and the import contract"
	@echo "make bench  - run benchmarks/ and regenerate docs/benchmarks.md"
	@echo "make lock   - recompile requirements/*.in into the hashed locks requirements/*.txt (LOCK_ARGS=--upgrade to move every pin)"
	@echo "make audit  - pip-audit every lock: fails on a known vulnerability (CI runs it)"
	@echo "make docker-check - build the full and web images and run them hardened against local PostgreSQL/Redis"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ClinPredict needs Python 3.11 (set PYTHON=/path/to/python3.11)")'
	$(PYTHON) -m venv $(VENV)

# Stamps: reinstall only when a lock file changes, so a second `make run` does not reinstall. Each first replaces the
# venv's bundled pip with requirements/pip.txt's, then installs its layer.
$(VENV)/.ml-installed: requirements/pip.txt requirements/ml.txt | $(BIN)/python
	$(BIN)/$(PIP_INSTALL) -r requirements/pip.txt
	$(BIN)/$(PIP_INSTALL) -r requirements/ml.txt
	$(BIN)/python -m pip check
	@touch $@

$(VENV)/.dev-installed: requirements/pip.txt requirements/ml.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/$(PIP_INSTALL) -r requirements/pip.txt
	$(BIN)/$(PIP_INSTALL) -r requirements/dev.txt
	$(BIN)/python -m pip check
	@touch $@ $(VENV)/.ml-installed

# The FHIR test server (sekmet-fhir) gets its own venv: its antlr4 runtime conflicts with dvc's (see the .in file).
$(VENV)/fhir-server/.installed: requirements/pip.txt requirements/fhir-server.txt | $(BIN)/python
	$(BIN)/python -m venv $(VENV)/fhir-server
	$(VENV)/fhir-server/bin/$(PIP_INSTALL) -r requirements/pip.txt
	$(VENV)/fhir-server/bin/$(PIP_INSTALL) -r requirements/fhir-server.txt
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

# pip-audit against every lock (not the venv), through PyPI's advisory data. --disable-pip: the locks are complete and
# hashed, so no resolver run; --strict: a package it could not look up fails the audit too. Exits non-zero on any known
# vulnerability. A canary first: Django 4.2.0 has advisories fixed in later releases (CVE-2023-31047, fixed in 4.2.1),
# so an audit that passes it cannot see any advisory data (a machine that reaches the package index but not the
# advisory API): then `make audit` fails, or with AUDIT_OFFLINE=skip (.ci/run) says so and stops without auditing.
AUDIT_OFFLINE ?= fail
PIP_AUDIT = $(BIN)/pip-audit --progress-spinner off --disable-pip
audit: $(VENV)/.dev-installed
	@if $(PIP_AUDIT) --no-deps -r <(echo Django==4.2.0) >/dev/null 2>&1; then \
	  echo "make audit: NOT RUN: no advisory data reachable (the canary Django 4.2.0 passed the audit)" >&2; \
	  exit $(if $(filter skip,$(AUDIT_OFFLINE)),0,1); \
	else \
	  set -e; for lock in $(LOCKS); do echo "pip-audit $$lock"; $(PIP_AUDIT) --strict --require-hashes -r $$lock; done; \
	fi

# uv comes from dev.txt. Without LOCK_ARGS, uv keeps every pin an existing lock has unless an .in file moved it.
lock: $(VENV)/.dev-installed
	$(call lock,requirements/pip.in,requirements/pip.txt)
	$(call lock,requirements/base.in,requirements/base.txt)
	$(call lock,requirements/ml.in,requirements/ml.txt,requirements/base.txt)
	$(call lock,requirements/dev.in,requirements/dev.txt,requirements/ml.txt)
	$(call lock,requirements/fhir-server.in,requirements/fhir-server.txt)
	$(call lock,requirements/bench-mlflow.in,requirements/bench-mlflow.txt,requirements/base.txt)

bench: $(VENV)/.dev-installed $(VENV)/fhir-server/.installed
	$(BIN)/python -m benchmarks

# Both images of docker/Dockerfile, run as docker/compose.yaml runs them, against this host's PostgreSQL and Redis:
# roles, migrate, bootstrap_demo, a prediction through gunicorn, a worker ping, verify_audit_chain; then both image
# sizes. Needs a Docker engine and psql; installs nothing into .venv. See scripts/docker-check.sh and docs/deploy.md.
docker-check:
	scripts/docker-check.sh

clean-var:
	rm -rf var/
