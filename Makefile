# mousflow developer entry points. The two README set-up commands are `make demo` and `make test`;
# each creates .venv and installs the pinned dependencies itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: venv demo test test-fast test-pipeline browser-deps lint bench bench-quick clean
venv: $(STAMP)
$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[test,casa]"
	@rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(VENV)/bin/mousflow demo

lint: venv
	$(VENV)/bin/ruff check .

# Three tiers: fast (unit and stage tests, no servers), pipeline (end-to-end flows on a real local Prefect
# server), cluster (the real Kubernetes test bed from hack/testbed.mk, built and started if needed).
# --durations: every run says where its time went.
test-fast: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not cluster and not slow" --durations=10 $(PYTEST_ARGS)

# The headless browser the weblog test opens the weblog in (Debian's chromium; installed only if missing).
browser-deps:
	hack/testbed/browser-deps.sh

test-pipeline: venv browser-deps
	$(PY) -m pytest -m "slow and not cluster" --durations=10 $(PYTEST_ARGS)

# The test bed's binaries and images build in the background (low priority) while the first two tiers
# run; cluster-up then waits for that build and finds them ready (hack/testbed/prebuild.sh).
test: testbed-prebuild venv test-fast test-pipeline test-cluster

# Every benchmark with the arguments of the README's figures (an hour or more), or a smoke run of each.
bench: venv
	$(PY) bench/run_all.py $(BENCH_ARGS)

bench-quick: venv
	$(PY) bench/run_all.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
-include hack/testbed.mk
