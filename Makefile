# drc-kit: the two commands README promises.
#   make all   [PROFILE=quick|full] [FROM_SCRATCH=1 [RECIPE=lab] [PRETRAINED=paper]]
#                                    set up .venv if absent, then regenerate everything: data check, any
#                                    missing checkpoint trained (resumable), evaluation, every notebook;
#                                    FROM_SCRATCH=1 retrains every part into runs/<profile>/checkpoints/;
#                                    RECIPE=lab with it: the shortened lab recipes, into runs/<profile>-lab/;
#                                    PRETRAINED=paper with it: tokenizer, semantic encoder, judges and tiny CLIP
#                                    copied from the shipped kit (what the paper does not train), into ...-pretrained/
#   make test                        set up .venv if absent, then run the test suite
# Other targets: notebooks (the notebooks alone), evaluation, setup, data (rebuild data/stickers_32px.npz from npm), browser-deps (Debian's
# chromium + chromedriver for the browser test; needs root), browser-test, clean.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PROFILE ?= quick
RUNS   ?= runs/$(PROFILE)
FROM_SCRATCH ?=
RECIPE ?= card
PRETRAINED ?=

.PHONY: all notebooks evaluation test setup data clean browser-deps browser-test

all: setup
	$(PY) -m drclib.reproduce --profile $(PROFILE) $(if $(FROM_SCRATCH),--from-scratch) --recipe $(RECIPE) $(if $(PRETRAINED),--pretrained "$(PRETRAINED)")

# The stamp is remade when pyproject.toml changes, so a new dependency is picked up.
$(VENV)/.drc-installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

setup: $(VENV)/.drc-installed

notebooks: setup
	$(PY) -m drclib.cli run-notebooks --profile $(PROFILE) --out $(RUNS)

evaluation: setup
	$(PY) -m drclib.evaluation --profile $(PROFILE) --out $(RUNS)/07_evaluation

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
