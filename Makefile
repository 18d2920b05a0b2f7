# mousflow developer entry points. The two README set-up commands are `make demo` and `make test`;
# each creates .venv and installs the pinned dependencies itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: venv demo test test-fast lint bench clean
venv: $(STAMP)
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(VENV)/bin/mousflow demo

lint: venv
	$(VENV)/bin/ruff check .

test-fast: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

test: test-fast

bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
-include hack/testbed.mk
