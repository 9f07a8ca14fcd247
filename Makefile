# The two commands a newcomer needs: `make serve` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# `make serve` honours HISTOSERVE_HOST/HISTOSERVE_PORT from the environment (as the README documents);
# `make serve HOST=... PORT=...` on the command line still wins. A generic HOST in the environment does not.
HOST := $(or $(HISTOSERVE_HOST),127.0.0.1)
PORT := $(or $(HISTOSERVE_PORT),8000)

.PHONY: install serve test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,train,dev]"
# the WSInfer model-config schema for tests/training/test_wsinfer.py; --no-deps: only its schema file
# is read, and its Hugging Face client would pull packages the project does not want
	$(PY) -m pip install -q --no-deps "wsinfer-zoo==0.6.3"
	touch $@

install: $(VENV)/.installed

serve: install
	HISTOSERVE_HOST=$(HOST) HISTOSERVE_PORT=$(PORT) $(PY) -m service

test: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
