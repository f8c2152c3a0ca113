# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Both build .venv at the repo root from the pinned requirements.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser docs bench lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Run the document-summarisation example DAG end to end against the bundled emulator.
demo: $(STAMP)
	$(PY) scripts/demo.py

## The linters and the type checker, the whole test suite, then the docs built with warnings as errors.
test: lint browser
	$(PY) -m pytest
	$(MAKE) docs

## ruff on all the Python here, and mypy --strict on airflow_gradient (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check airflow_gradient tests bench dags_examples scripts
	$(PY) -m mypy

## Debian's chromium, for the browser test of the UI pages (tests/plugins/test_browser.py).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir build/site

bench: $(STAMP)
	$(PY) -m bench

## Re-pin after changing dependencies (from a venv that has exactly what is needed).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^airflow-gradient' > requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache
