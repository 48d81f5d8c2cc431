# Mandate: `make run` serves the whole thing; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install lint migrations-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

var/secret_key:
	mkdir -p var
	$(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
	chmod 600 var/secret_key

run: install var/secret_key
	export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}"; \
	export MANDATE_WEBHOOK_ALLOW_PRIVATE="$${MANDATE_WEBHOOK_ALLOW_PRIVATE:-true}"; \
	export PUBLIC_BASE_URL="$${PUBLIC_BASE_URL:-http://$(HOST):$(PORT)}"; \
	$(PY) manage.py migrate --no-input && \
	$(PY) manage.py collectstatic --no-input --verbosity 0 && \
	$(PY) manage.py bootstrap_demo --base-url "$$PUBLIC_BASE_URL" && \
	$(PY) manage.py apply_bundle controlplane/demo/bundle.yaml --organization demo --actor system:demo \
		--approve-as admin && \
	exec $(PY) manage.py serve --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

migrations-check: install
	SECRET_KEY=check $(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var staticfiles
