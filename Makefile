# `make run` and `make test` each set up .venv on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(PY) -m nst.run --config configs/default.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

# Day-to-day: everything but the tests marked slow (subprocesses, several
# devices or processes, real weights). CI runs `make test`.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m 'not slow'

clean:
	rm -rf $(VENV) runs
