# drc-kit: the two commands README promises.
#   make all   [PROFILE=quick|full]  set up .venv if absent, then run every notebook in order
#   make test                        set up .venv if absent, then run the test suite
# Other targets: setup, data (rebuild data/stickers_32px.npz from npm), browser-deps (Debian's
# chromium + chromedriver for the browser test; needs root), browser-test, clean.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PROFILE ?= quick
RUNS   ?= runs/$(PROFILE)

.PHONY: all notebooks test setup data clean browser-deps browser-test

all: notebooks

# The stamp is remade when pyproject.toml changes, so a new dependency is picked up.
$(VENV)/.drc-installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

setup: $(VENV)/.drc-installed

notebooks: setup
	$(PY) -m drclib.cli run-notebooks --profile $(PROFILE) --out $(RUNS)

test: setup
	$(PY) -m pytest

data: setup
	$(PY) -m drclib.data.build

browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

browser-test: setup browser-deps
	DRC_REQUIRE_BROWSER=1 $(PY) -m pytest tests/test_browser.py

clean:
	rm -rf runs .pytest_cache
