"""The README's *Install with Helm* on the real test bed, command by command, with what the chart now brings: the
dask-kubernetes controller and CRDs, the imaging service account, history on, and an uninstall hook.

Install as the README says for "any other S3" (namespace labelled restricted, the S3 Secret, `helm install`,
with the test bed's values as `make testbed-chart` sets them), apply a tiny MOUS with small channel chunks whose
imaging runs over two Dask worker pods sized per chunk (gone afterwards), apply a second MOUS of the same kind
and check that its stage Jobs were sized from the first one's history, then `helm uninstall` with the operator
running and check that no MOUS keeps the operator's finalizer and no hook object is left. The tests run in file
order and share one release."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from harness import (
    apply_mous,
    assert_dask_rbac_was_enough,
    assert_delivered_products,
    pods_of,
    stage_jobs,
    wait_delivered,
)

from mousflow.model import load_manifest
from mousflow.pipeline.demand import demand_of
from mousflow.pipeline.history import History
from mousflow.pipeline.resources import JobDemand, estimate_stage_resources
from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
CHART = Path(__file__).resolve().parents[2] / "helm" / "mousflow"
SUFFIX = uuid.uuid4().hex[:8]
NS = f"chart13-{SUFFIX}"
RELEASE = "chart13"
FULLNAME = f"{RELEASE}-mousflow"
MiB = 2**20
STAGES = ("calibration", "imaging", "packaging")


@pytest.fixture(scope="module")
def history_uri(tiny_s3_mous) -> str:
    """A history prefix of this module's own, in the bucket of the session's tiny MOUS."""
    return f"{tiny_s3_mous.rsplit('/', 1)[0]}/history-{SUFFIX}"


@pytest.fixture(scope="module")
def release(cluster, s3_env, runner_image, history_uri):
    repository, tag = runner_image.rsplit(":", 1)
    s3_in_cluster = cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"]
    # the README's commands, in its order
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("-n", NS, "create", "secret", "generic", "mousflow-s3",
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    values = {"image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
              # the test bed: its MinIO as the external S3, no volume provisioner (make testbed-chart)
              "s3.existingSecret": "mousflow-s3", "s3.endpoint": s3_in_cluster,
              "prefect.database.sqlite.persistence.enabled": "false", "history.uri": history_uri,
              # two small workers fit the shared 2-core node; automatic delivery needs no reviewer
              "dask.minWorkers": "2", "dask.maxWorkers": "2", "dask.workerCpu": "100m",
              "operator.autoDelivery": "true", "operator.tickSeconds": "2"}
    args = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    state = {"installed": False}
    try:
        notes = cluster.helm("install", RELEASE, str(CHART), "-n", NS, *args, "--wait", "--timeout", "5m",
                             timeout=330)
        state["installed"] = True
        assert f"History:        {history_uri}" in notes, notes
        yield state
    finally:
        if state["installed"]:  # a test failed before the uninstall test
            cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m", timeout=270)
        cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=180s", check=False, timeout=200)


def test_install_brings_the_dask_controller_and_the_imaging_account(cluster, release):
    out = cluster.kubectl("-n", NS, "get", "pods")  # the README's check
    for component in ("operator", "dask-controller", "prefect-server"):
        pods = pods_of(cluster, NS, component)
        assert len(pods) == 1 and all(c["ready"] for c in pods[0]["status"]["containerStatuses"]), (component, out)
    for crd in ("daskclusters", "daskworkergroups", "daskautoscalers", "daskjobs"):
        assert cluster.get("crd", f"{crd}.kubernetes.dask.org")
    imaging = f"system:serviceaccount:{NS}:mousflow-imaging"

    def can(sa, *args):
        return cluster.kubectl("auth", "can-i", "--as", sa, *args, check=False).strip()
    assert can(imaging, "create", "daskclusters.kubernetes.dask.org", "-n", NS) == "yes"
    assert can(imaging, "create", "pods", "-n", NS) == "no"
    assert can(imaging, "get", "secrets", "-n", NS) == "no"
    controller = f"system:serviceaccount:{NS}:{FULLNAME}-dask-controller"
    assert can(controller, "create", "deployments.apps", "-n", NS) == "yes"
    assert can(controller, "create", "pods", "-n", "default") == "no"
    assert can(controller, "list", "customresourcedefinitions") == "no"


def _watch_dask(cluster, seen: dict, done: threading.Event) -> None:
    """What the Dask controller made while the stage ran: worker pods and their requests."""
    while not done.is_set():
        out = cluster.kubectl("get", "pods", "-n", NS, "-l", "dask.org/component=worker", "-o", "json", check=False)
        for pod in (json.loads(out)["items"] if out.strip() else []):
            seen.setdefault("workers", {})[pod["metadata"]["name"]] = pod["spec"]["containers"][0]["resources"]
        done.wait(2.0)


def _demand(doc: dict) -> JobDemand:
    return demand_of(load_manifest(yaml.safe_dump(doc)))


def test_imaging_runs_over_dask_worker_pods_sized_per_chunk(cluster, release, tiny_s3_mous, history_uri):
    seen: dict = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_dask, args=(cluster, seen, done), daemon=True)
    watcher.start()
    try:
        doc = apply_mous(cluster, NS, tiny_s3_mous, "chart13-first", "c13a", imaging={"channelChunk": 4})
        wait_delivered(cluster, NS, "chart13-first", f"{FULLNAME}-operator", timeout=1800)
    finally:
        done.set()
        watcher.join(10)
    assert_delivered_products(doc)
    release["first"] = doc
    # two worker pods at least, each sized for one chunk by the model (no imaging-worker history yet)
    workers = seen.get("workers", {})
    assert len(workers) >= 2, seen
    per_chunk = estimate_stage_resources("imaging-worker", _demand(doc), 1)
    for resources in workers.values():
        assert resources["requests"]["memory"] == f"{per_chunk.memory_bytes // MiB}Mi", (resources, per_chunk)
    summary = Location(f"{doc['spec']['output']['uri']}/imaging/summary.json").read_json()
    # (>= 2: a second, cluster-wide controller on a shared cluster may add workers of its own)
    assert summary["scaleout"]["mode"] == "kubernetes" and summary["scaleout"]["workers_used"] >= 2, summary
    # gone afterwards: no DaskCluster, no scheduler or worker pod
    cluster.wait_until("the Dask cluster to be gone", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", NS, "-l", "dask.org/cluster-name", "-o", "json"))["items"], timeout=120)
    assert not json.loads(cluster.kubectl("get", "daskclusters", "-n", NS, "-o", "json"))["items"]
    assert_dask_rbac_was_enough(cluster, NS, f"{FULLNAME}-dask-controller")
    # the operator recorded every stage's measured peak under the chart's history prefix
    history = History(Location(history_uri))
    for stage in (*STAGES, "imaging-worker"):
        assert [r.uid for r in history.records(stage)] == [doc["spec"]["uid"]], stage


def test_the_second_mous_of_a_kind_is_sized_from_the_first_ones_history(cluster, release, tiny_s3_mous,
                                                                         history_uri):
    first = release.get("first")
    assert first, "needs the first MOUS (previous test)"
    history = History(Location(history_uri))
    learned = {stage: history.records(stage)[0] for stage in STAGES}  # the first MOUS's, before the second runs
    doc = apply_mous(cluster, NS, tiny_s3_mous, "chart13-second", "c13b", imaging={"channelChunk": 4})
    wait_delivered(cluster, NS, "chart13-second", f"{FULLNAME}-operator", timeout=1800)
    demand = _demand(doc)
    jobs = stage_jobs(cluster, NS, doc["spec"]["uid"])
    for stage in STAGES:
        record = learned[stage]
        assert JobDemand(**record.demand) == demand, stage  # the same kind of MOUS
        requested = jobs[stage][0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
        model = estimate_stage_resources(stage, demand, 1)
        sized = estimate_stage_resources(stage, demand, 1, learned_factor=record.memory_ratio)
        assert requested == f"{sized.memory_bytes // MiB}Mi", (stage, requested, sized, record)
        assert requested != f"{model.memory_bytes // MiB}Mi", (stage, requested, model, record)
    assert_delivered_products(doc)


def test_helm_uninstall_with_the_operator_running_leaves_no_finalizer(cluster, release):
    assert pods_of(cluster, NS, "operator"), "the operator runs: nobody scaled it down"
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m", timeout=270)
    release["installed"] = False
    cluster.wait_until("the operator and Dask controller pods to go", lambda: not pods_of(cluster, NS, "operator")
                       and not pods_of(cluster, NS, "dask-controller"), timeout=120)
    mouses = json.loads(cluster.kubectl("get", "mous", "-n", NS, "-o", "json"))["items"]
    assert sorted(m["metadata"]["name"] for m in mouses) == ["chart13-first", "chart13-second"]
    for mous in mouses:
        assert "mousflow.io/finalizer" not in (mous["metadata"].get("finalizers") or []), mous["metadata"]
    # the hook's Job, ServiceAccount and Roles went with it; nothing of the release is left
    left = cluster.kubectl("get", "jobs,serviceaccounts,roles,rolebindings,deployments", "-n", NS, "-o", "name")
    assert not [line for line in left.split() if FULLNAME in line], left
    # and a MOUS is deletable without any operator
    cluster.kubectl("delete", "mous", "chart13-first", "-n", NS, "--timeout=60s", timeout=90)
