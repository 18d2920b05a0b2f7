# mousflow developer entry points. The two README set-up commands are `make demo` and `make test`;
# each creates .venv and installs the pinned dependencies itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: venv demo test test-fast test-fast-but-chart test-chart test-pipeline test-full corpus browser-deps lint bench-deps bench bench-quick bench-control-plane campaign-test chaos clean
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
FAST_TESTS := -m "not cluster and not slow" --durations=10
test-fast: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

# make test runs the fast tier in two parts: the chart's tests (tests/helm) need the Helm binary that the test
# bed's background build makes, so on a cold machine they run after the pipeline tier, by when it is built,
# instead of holding the fast tier up for it (7 minutes measured cold).
test-fast-but-chart: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(FAST_TESTS) --ignore=tests/helm $(PYTEST_ARGS)

test-chart: venv
	$(PY) -m pytest $(FAST_TESTS) tests/helm $(PYTEST_ARGS)

# The headless browser the weblog test opens the weblog in (Debian's chromium; installed only if missing).
browser-deps:
	hack/testbed/browser-deps.sh

test-pipeline: venv browser-deps
	$(PY) -m pytest -m "slow and not cluster and not full" --durations=10 $(PYTEST_ARGS)

# The full-size versions of tests that `make test` runs at a reduced size (marked `full`; see the README).
test-full: venv
	$(PY) -m pytest -m "full and not cluster" --durations=10 $(PYTEST_ARGS)

# The test corpus at the issue's size (tests/corpus; `make test` runs each case reduced): CASA-simulated MOUSs,
# generated once into ~/.cache/mousflow/corpus (MOUSFLOW_CORPUS_CACHE), imported and processed end to end;
# each case prints one line of figures (flux and position errors, rms ratio, QA2, seconds per step).
corpus: venv
	set -o pipefail; $(PY) -m pytest -m full tests/corpus -s --durations=10 $(PYTEST_ARGS) \
	  | grep -E '^corpus |^FAILED|^ERROR|passed|failed|error'


# The test bed's binaries and images build in the background (low priority) while the first two tiers
# run; cluster-up then waits for that build and finds them ready (hack/testbed/prebuild.sh).
test: testbed-prebuild venv test-fast-but-chart test-pipeline test-chart test-cluster

# An archive re-imaging campaign at full size on the test bed (tests/cluster/test_campaign.py): 56 entries,
# 48 good (sharing one tiny simulated input) and 8 faulty (2 each: missing execution block, missing manifest,
# duplicate, data that fails calibration), 52 MOUSs. Hours on the 2-core machine (a tiny MOUS is ~4-5 min of
# pods, 2 at a time); `make test` runs the same test with 3 good and 4 faulty entries.
CAMPAIGN_GOOD ?= 48
CAMPAIGN_FAULTY ?= 2
campaign-test: venv
	$(TESTBED_DIR)/cluster-up.sh
	KUBECONFIG=$(TESTBED_KUBECONFIG) CAMPAIGN_GOOD=$(CAMPAIGN_GOOD) CAMPAIGN_FAULTY=$(CAMPAIGN_FAULTY) \
	  CAMPAIGN_MAX_IN_FLIGHT=$(or $(CAMPAIGN_MAX_IN_FLIGHT),4) \
	  $(PY) -m pytest -m cluster tests/cluster/test_campaign.py --durations=5 $(PYTEST_ARGS)

# The chaos suite at the issue's size (tests/cluster/test_chaos.py): 6 MOUSs through 24 random stage-pod and
# Dask-worker kills, the operator killed in every phase, MinIO away 60 s, the Prefect server and the API server
# restarted, a stage pod evicted under node memory pressure; it prints what it did and what came out. 13 min on
# the 2-core machine (measured 2026-12-04); `make test` runs the same test with 3 MOUSs and 4 kills (8.5 min).
CHAOS_MOUSES ?= 6
CHAOS_POD_KILLS ?= 24
chaos: venv
	$(TESTBED_DIR)/cluster-up.sh
	KUBECONFIG=$(TESTBED_KUBECONFIG) CHAOS_MOUSES=$(CHAOS_MOUSES) CHAOS_POD_KILLS=$(CHAOS_POD_KILLS) \
	  $(PY) -m pytest -m cluster tests/cluster/test_chaos.py -s --durations=5 $(PYTEST_ARGS)

# Every benchmark with the arguments of the README's figures (an hour or more), or a smoke run of each.
bench-deps:
	hack/testbed/bench-deps.sh

bench: venv bench-deps
	$(PY) bench/run_all.py $(BENCH_ARGS)

bench-quick: venv bench-deps
	$(PY) bench/run_all.py --quick $(BENCH_ARGS)

# The operator's control plane on the test bed: 1,000 MOUSs applied at once (bench/control_plane.py; the
# cluster tier runs it with 200 in tests/cluster/test_control_plane_scale.py). Needs `make cluster-up`.
bench-control-plane: venv
	KUBECONFIG=$${KUBECONFIG:-/tmp/mousflow-cluster/kubeconfig} $(PY) bench/control_plane.py --n 1000 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
-include hack/testbed.mk
