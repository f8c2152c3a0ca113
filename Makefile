# Two commands on a fresh machine with Python 3.10+: `make demo` and `make test`.
# Both build .venv at the repo root from the pinned requirements.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Run the document-summarisation example DAG end to end against the bundled emulator.
demo: $(STAMP)
	$(PY) scripts/demo.py

## The whole test suite, then the docs built with warnings as errors.
test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) docs

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir build/site

bench: $(STAMP)
	$(PY) -m bench

## Re-pin after changing dependencies (from a venv that has exactly what is needed).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^airflow-gradient' > requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache
