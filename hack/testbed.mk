# Local Kubernetes test bed (included by the top-level Makefile). See hack/README-testbed.md.
# Binaries and images are cached in ~/.cache/mousflow (MOUSFLOW_CACHE); cluster state, logs and the
# kubeconfig are in /tmp/mousflow-cluster (TESTBED_STATE).
TESTBED_DIR := hack/testbed
TESTBED_STATE ?= /tmp/mousflow-cluster
TESTBED_KUBECONFIG := $(TESTBED_STATE)/kubeconfig
KEEP_CLUSTER ?= 0
CHART ?= helm/mousflow
PYTHON_FOR_CLUSTER_TESTS ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
export TESTBED_STATE

.PHONY: testbed-prebuild cluster-deps cluster-binaries images images-runner cluster-up cluster-down cluster-status test-cluster \
	testbed-chart kind-up kind-down

testbed-prebuild:  ## build binaries and images in the background (make test: overlaps the first tiers)
	$(TESTBED_DIR)/prebuild.sh start

cluster-deps:  ## Debian packages: containerd, runc, CNI plugins, buildah, debootstrap, iptables, ...
	$(TESTBED_DIR)/host-deps.sh

cluster-binaries:  ## build (or reuse) the pinned Kubernetes, etcd, CoreDNS, Helm and MinIO binaries
	$(TESTBED_DIR)/build-binaries.sh

images: cluster-deps  ## pause, Python base, CoreDNS and MinIO images with buildah (no registry, no Docker)
	$(TESTBED_DIR)/images.sh pause base coredns minio

images-runner: cluster-deps  ## the runner image: containers/runner/Dockerfile on the local Python base
	$(TESTBED_DIR)/images.sh runner
	@if [ -S $(TESTBED_STATE)/containerd/containerd.sock ]; then $(TESTBED_DIR)/images.sh import; fi

cluster-up:  ## start the single-node cluster; KUBECONFIG=$(TESTBED_KUBECONFIG)
	$(TESTBED_DIR)/cluster-up.sh

cluster-down:  ## stop exactly the processes cluster-up started and clean up
	$(TESTBED_DIR)/cluster-down.sh

cluster-status:
	@$(TESTBED_DIR)/cluster-status.sh

# Install the project's chart on the running local test bed with the locally built runner image
# (MOUSFLOW_RUNNER_IMAGE, default localhost/mousflow/runner:dev). The test bed has no registry (so no MinIO
# image) and no volume provisioner: the chart uses the test bed's MinIO as its external S3 (Secret
# mousflow-system/minio-credentials) and keeps Prefect's SQLite in an emptyDir. The stage history goes to a
# bucket of that MinIO, made here if missing (the chart makes buckets only in its own MinIO).
TESTBED_CHART_IMAGE ?= $(or $(MOUSFLOW_RUNNER_IMAGE),localhost/mousflow/runner:dev)
TESTBED_HISTORY_BUCKET ?= mousflow
testbed-chart:
	@test -f $(CHART)/Chart.yaml || { echo "no chart at $(CHART)"; exit 1; }
	eval "$$($(TESTBED_DIR)/env.sh)" && $(PYTHON_FOR_CLUSTER_TESTS) -c 'import os, s3fs; \
	  fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["S3_ENDPOINT_URL"]}); \
	  fs.exists("$(TESTBED_HISTORY_BUCKET)") or fs.mkdir("$(TESTBED_HISTORY_BUCKET)")' && \
	helm upgrade --install mousflow $(CHART) \
	  --namespace mousflow-system --create-namespace --wait --timeout 5m \
	  --set image.repository=$(firstword $(subst :, ,$(TESTBED_CHART_IMAGE))) \
	  --set image.tag=$(lastword $(subst :, ,$(TESTBED_CHART_IMAGE))) --set image.pullPolicy=Never \
	  --set s3.existingSecret=minio-credentials \
	  --set s3.endpoint=http://minio.mousflow-system.svc.cluster.local:9000 \
	  --set prefect.database.sqlite.persistence.enabled=false \
	  --set history.uri=s3://$(TESTBED_HISTORY_BUCKET)/history \
	  --set dask.workerCpu=100m

# Bring the cluster up (building what is missing), run the cluster tier (the `exclusive` modules alone, then the
# others in two lanes side by side: hack/testbed/cluster-tests.sh), then bring it down again unless
# KEEP_CLUSTER=1 or it was already running before.
test-cluster: venv
	@was_up=0; if [ -f $(TESTBED_KUBECONFIG) ] && $(TESTBED_DIR)/cluster-status.sh >/dev/null 2>&1; then was_up=1; fi; \
	$(TESTBED_DIR)/cluster-up.sh || exit $$?; \
	rc=0; KUBECONFIG=$(TESTBED_KUBECONFIG) $(TESTBED_DIR)/cluster-tests.sh $(PYTHON_FOR_CLUSTER_TESTS) $(PYTEST_ARGS) || rc=$$?; \
	if [ "$(KEEP_CLUSTER)" != 1 ] && [ $$was_up = 0 ]; then $(TESTBED_DIR)/cluster-down.sh; fi; \
	exit $$rc

# ---- For machines with Docker: the same images and chart on a kind cluster (not runnable on the
# Docker-less development machines; see hack/README-testbed.md).
KIND_CLUSTER ?= mousflow
RUNNER_IMAGE_KIND ?= mousflow/runner:dev

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --wait 120s
	docker build -f containers/runner/Dockerfile -t $(RUNNER_IMAGE_KIND) .
	kind load docker-image $(RUNNER_IMAGE_KIND) --name $(KIND_CLUSTER)
	@if [ -f $(CHART)/Chart.yaml ]; then \
	  helm upgrade --install mousflow $(CHART) --kube-context kind-$(KIND_CLUSTER) \
	    --namespace mousflow-system --create-namespace \
	    --set image.repository=$(firstword $(subst :, ,$(RUNNER_IMAGE_KIND))) \
	    --set image.tag=$(lastword $(subst :, ,$(RUNNER_IMAGE_KIND))) --set image.pullPolicy=IfNotPresent; \
	else echo "no chart at $(CHART) yet: cluster and image only"; fi

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)
