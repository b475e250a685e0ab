# One entry point. `make demo` runs the main job; `make test` runs every check CI runs.
# Both install what they need on first use: a Python venv from requirements-dev.txt, Azurite via npm and,
# where no Chromium is found, Debian's `chromium` (the browser tests drive it through Playwright's
# executable_path: Playwright's own browser download is unreachable).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INFRA_VENV := .venv-infra
MOCK_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test dev bench lint typecheck unit integration deps browser package clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

deps: $(VENV)/.installed $(INFRA_VENV)/.installed node_modules/.installed browser

browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }

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

package: $(VENV)/.installed
	$(PY) -m solution.package $(if $(VERSION),--version $(VERSION),) $(if $(FROM_APP),--from-app $(FROM_APP),)

clean:
	rm -rf .local dist .pytest_cache .mypy_cache .ruff_cache
