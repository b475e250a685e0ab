# One entry point. `make demo` runs the main job; `make test` runs every check CI runs.
# Both install what they need on first use: a Python venv from requirements-dev.txt and Azurite via npm.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra
MOCK_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test dev bench lint typecheck unit integration deps clean

deps: $(VENV)/.installed $(INFRA_VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# checkov, for the Bicep scan (tests/unit/test_infra.py), in its own venv: its pins conflict with pytest's.
$(INFRA_VENV)/.installed: requirements-infra.txt
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: deps
	$(PY) -m local_runner.demo

test: deps lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: deps
	$(PY) -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

dev: deps
	$(PY) -m local_runner.dev $(if $(MOCK_ARGS),--mock-args '$(MOCK_ARGS)',)

bench: deps
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
