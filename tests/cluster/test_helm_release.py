"""helm/mousflow on the real test bed, installed once and used the way the README's *Install with Helm* says,
command by command: a namespace labelled to enforce the restricted Pod Security profile, the S3 Secret, one
`helm install` (the test bed's MinIO as "any other S3", Prefect's SQLite on a PersistentVolumeClaim bound to a
hostPath volume made here since the test bed has no provisioner, the chart's dask-kubernetes controller, the
imaging account and history on, two 100m Dask workers per imaging stage: the shared 2-core node fits them beside
the imaging pod).

On that one release, in file order: the pods run locked down and healthy with least-privilege RBAC; a tiny MOUS
goes from apply to Delivered with its imaging over two Dask worker pods sized per chunk (gone afterwards) and
every stage's measured peak in the history; a second MOUS of the same kind is in flight during a `helm upgrade`
that replaces the operator, finishes with one Job per stage, and was sized from the first one's history; `helm
uninstall` with the operator running keeps the MOUSs (deletable, no finalizer), the delivered data and Prefect's
volume, and leaves no object of the release. A second, short release shows the chart's own MinIO."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import (
    apply_mous,
    assert_dask_rbac_was_enough,
    assert_delivered_products,
    jobs_by_stage,
    pods_of,
    stage_jobs,
    wait_delivered,
)
from prometheus_client.parser import text_string_to_metric_families

from mousflow.model import load_manifest
from mousflow.pipeline.demand import demand_of
from mousflow.pipeline.history import History
from mousflow.pipeline.resources import JobDemand, estimate_stage_resources
from mousflow.stages.image_store import ImageStore
from mousflow.storage.location import Location

# exclusive: its imaging asserts two Dask worker pods beside the imaging pod, which the 2-core node fits only
# when no other module's stage pods hold its CPU requests
pytestmark = [pytest.mark.cluster, pytest.mark.exclusive, pytest.mark.usefixtures("host_s3")]
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mousflow"
SUFFIX = uuid.uuid4().hex[:8]
NS = f"helm-{SUFFIX}"
RELEASE = "mf"
FULLNAME = f"{RELEASE}-mousflow"
OPERATOR = f"{FULLNAME}-operator"
MiB = 2**20
STAGES = ("calibration", "imaging", "packaging")
# 8-channel chunks: six chunks over tiny's two windows (16 + 32 channels), enough to keep both workers busy
CHANNEL_CHUNK = 8


@pytest.fixture(scope="module")
def sim(tiny_s3_mous):
    """The session's tiny MOUS in the test bed's MinIO (simulated from the host); runs and deliveries of this
    module go under names of its own (helm-*)."""
    return tiny_s3_mous


@pytest.fixture(scope="module")
def module_s3(s3_env):
    """The module's fixtures read and write MinIO from this process too (host_s3 is per test, and a module
    fixture is set up before it)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_env.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(scope="module")
def history_uri(tiny_s3_mous) -> str:
    """A history prefix of this module's own, in the bucket of the session's tiny MOUS."""
    return f"{tiny_s3_mous.rsplit('/', 1)[0]}/history-{SUFFIX}"


def _metrics(cluster) -> str:
    return cluster.kubectl("get", "--raw",
                           f"/api/v1/namespaces/{NS}/services/{FULLNAME}-metrics:metrics/proxy/metrics")


@pytest.fixture(scope="module")
def release(cluster, s3_env, runner_image, history_uri):
    """The chart installed (helm --wait) as the README says, with the test bed's values."""
    storage_class = f"mousflow-helm-{SUFFIX}"
    host_dir = Path(f"/tmp/mousflow-helm-pv-{SUFFIX}")
    repository, tag = runner_image.rsplit(":", 1)
    # the README's commands, in its order
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl("-n", NS, "create", "secret", "generic", "mousflow-s3",
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3_env['AWS_ACCESS_KEY_ID']}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_env['AWS_SECRET_ACCESS_KEY']}")
    # a static volume for Prefect's SQLite, owned by the image's user (the pods never run as root)
    host_dir.mkdir(mode=0o770)
    os.chown(host_dir, 10001, 10001)
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": storage_class},
                   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": storage_class,
                            "hostPath": {"path": str(host_dir), "type": "Directory"}}})
    values = {"image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
              # the test bed's MinIO as the external S3 (make testbed-chart does the same)
              "s3.existingSecret": "mousflow-s3", "s3.endpoint": cluster.s3["S3_ENDPOINT_URL_IN_CLUSTER"],
              "prefect.database.sqlite.persistence.storageClassName": storage_class, "history.uri": history_uri,
              # the test bed is one shared 2-core node: a worker requesting a whole core is never scheduled next
              # to the imaging pod, which then ends with "No valid workers found" (make testbed-chart sets 100m)
              "dask.minWorkers": "2", "dask.maxWorkers": "2", "dask.workerCpu": "100m",
              # automatic delivery needs no reviewer
              "operator.autoDelivery": "true", "operator.progressSeconds": "2"}
    args = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    state = {"args": args, "installed": False}
    try:
        notes = cluster.helm("install", RELEASE, str(CHART), "-n", NS, *args, "--wait", "--timeout", "5m",
                             timeout=330)
        state["installed"] = True
        assert f"History:        {history_uri}" in notes, notes
        yield state
    finally:
        # the operator removes its finalizers while it runs; after an uninstall nothing would, so drop them
        for name in cluster.kubectl("get", "mous", "-n", NS, "-o", "name", check=False).split():
            cluster.kubectl("patch", name, "-n", NS, "--type", "merge", "-p", '{"metadata":{"finalizers":null}}',
                            check=False)
        if state["installed"]:  # a test failed before the uninstall test
            try:
                cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m", timeout=270)
            except AssertionError as exc:  # the namespace goes anyway
                print(exc)
        cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=180s", check=False, timeout=200)
        cluster.kubectl("delete", "pv", storage_class, "--wait=false", check=False)
        shutil.rmtree(host_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the install
def test_install_runs_locked_down_and_healthy(cluster, release):
    labels = cluster.get("namespace", NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    out = cluster.kubectl("-n", NS, "get", "pods")  # the README's check
    for component in ("operator", "dask-controller", "prefect-server"):
        pods = pods_of(cluster, NS, component)
        assert len(pods) == 1, (component, out)
        spec, st = pods[0]["spec"], pods[0]["status"]
        assert all(c["ready"] for c in st["containerStatuses"]), (component, st)
        assert spec["securityContext"]["runAsNonRoot"] is True, component
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True, component
    assert not pods_of(cluster, NS, "minio")  # the external S3 Secret turned the chart's MinIO off
    # Prefect's SQLite on the claim bound to our volume
    assert cluster.get("pvc", f"{FULLNAME}-prefect", NS)["status"]["phase"] == "Bound"
    # the operator's Prometheus endpoint behind the metrics Service, and kopf's health endpoint
    metrics = _metrics(cluster)
    assert "mousflow_flow_runs_active 0.0" in metrics and 'mousflow_mous{phase="Delivered"}' in metrics
    operator_pod = pods_of(cluster, NS, "operator")[0]["metadata"]["name"]
    health = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/{operator_pod}:8080/proxy/healthz")
    assert json.loads(health) == {}
    # the operator's service account can do what it needs and nothing cluster-wide
    sa = f"system:serviceaccount:{NS}:{OPERATOR}"

    def can(*args):
        return cluster.kubectl("auth", "can-i", "--as", sa, *args, check=False).strip()
    assert can("create", "jobs.batch", "-n", NS) == "yes"
    assert can("patch", "mouses.mousflow.io", "--subresource=status", "-n", NS) == "yes"
    assert can("get", "secrets", "-n", NS) == "no"
    assert can("delete", "jobs.batch", "-n", NS) == "yes"  # a Job whose pod cannot start (PodCannotStart)
    assert can("delete", "pods", "-n", NS) == "no"
    assert can("list", "mouses.mousflow.io", "-n", "default") == "no"
    # a namespace object is addressed inside itself: a real request shows the Role reaches this one only
    # (`auth can-i` cannot express that)
    assert cluster.kubectl("get", "namespace", NS, "--as", sa, "-o", "name").strip() == f"namespace/{NS}"
    with pytest.raises(AssertionError, match="forbidden"):
        cluster.kubectl("get", "namespace", "default", "--as", sa)


def test_install_brings_the_dask_controller_and_the_imaging_account(cluster, release):
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


# ------------------------------------------------------------------------- the first MOUS: apply to Delivered
def _watch_dask(cluster, seen: dict, done: threading.Event) -> None:
    """What the Dask controller made while the stage ran: the DaskCluster's owner, worker pods and their
    resources."""
    while not done.is_set():
        out = cluster.kubectl("get", "daskclusters,pods", "-n", NS, "-o", "json", check=False)
        for item in (json.loads(out)["items"] if out.strip() else []):
            if item["kind"] == "DaskCluster" and item["metadata"].get("ownerReferences"):
                seen["owners"] = item["metadata"]["ownerReferences"]
            if item["kind"] == "Pod" and item["metadata"].get("labels", {}).get("dask.org/component") == "worker":
                seen.setdefault("workers", {})[item["metadata"]["name"]] = item["spec"]["containers"][0]["resources"]
        done.wait(2.0)


def _demand(doc: dict) -> JobDemand:
    return demand_of(load_manifest(yaml.safe_dump(doc)))


def _assert_rbac_was_enough(cluster) -> None:
    """Least privilege, but enough: the operator never hit a refusal (kopf logs these and carries on)."""
    log = cluster.kubectl("logs", "-n", NS, f"deployment/{OPERATOR}", "--tail=-1")
    for refusal in ("Forbidden", "forbidden", "Not enough permissions", "Failed to post an event"):
        assert refusal not in log, [line for line in log.splitlines() if refusal in line][:5]


@pytest.fixture(scope="module")
def first(cluster, release, sim, module_s3) -> dict:
    """A tiny MOUS (multi-chunk cubes) applied to the release and Delivered, with the Dask worker pods seen while
    it ran; the tests below share it."""
    seen: dict = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_dask, args=(cluster, seen, done), daemon=True)
    watcher.start()
    try:
        doc = apply_mous(cluster, NS, sim, "helm-a", "a1", imaging={"channelChunk": CHANNEL_CHUNK})
        status = wait_delivered(cluster, NS, "helm-a", OPERATOR, timeout=1800)
    finally:
        done.set()
        watcher.join(10)
    return {"doc": doc, "status": status, "workers": seen.get("workers", {}), "owners": seen.get("owners")}


def test_tiny_mous_goes_from_apply_to_delivered(cluster, first):
    doc, status = first["doc"], first["status"]
    assert status["qa2"]["verdict"] == "Pass"
    for stage in STAGES:
        st = status["stages"][stage]
        assert st["state"] == "Succeeded", st
        assert st["startedAt"] and st["finishedAt"] and st["progressPercent"] == 100
        assert st["checkpointUri"].endswith(f"checkpoints/{stage}.json")
        assert st["resources"]["requested"]["memory"].endswith("Mi")
        assert st["resources"]["used"]["peakMemoryBytes"] > 50 * MiB
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Degraded"]["status"] == "False"
    assert_delivered_products(doc)
    assert status["products"]["deliveredUri"] == doc["spec"]["delivery"]["uri"]
    # an Event per transition, and the phase and verdict in `kubectl get mous`
    events = json.loads(cluster.kubectl("get", "events", "-n", NS, "-o", "json",
                                        "--field-selector", "involvedObject.name=helm-a"))["items"]
    reasons = [e["reason"] for e in events]
    for reason in ("InputsPresent", "Admitted", "ProcessingSucceeded", "AutomaticDelivery", "Delivered"):
        assert reason in reasons, reasons
    row = cluster.kubectl("get", "mous", "helm-a", "-n", NS).splitlines()[1].split()
    assert row[1] == "Delivered" and "Pass" in row, row
    # one Job per stage, owned by the MOUS; the stage pods ran under the restricted profile (the namespace admits
    # nothing else), from the chart's image
    jobs = stage_jobs(cluster, NS, doc["spec"]["uid"])
    assert sorted(jobs) == list(STAGES) and all(len(j) == 1 for j in jobs.values()), jobs_by_stage(
        cluster, NS, doc["spec"]["uid"])
    assert all(j["metadata"]["ownerReferences"][0]["name"] == "helm-a" for js in jobs.values() for j in js)
    # the flow run was recorded by the chart's Prefect server
    assert status.get("flowRunId")
    _assert_kpi_metrics_after_one_delivery(_metrics(cluster), doc)
    _assert_rbac_was_enough(cluster)


def test_no_credential_in_any_resource_status_event_log_or_flow_parameter(cluster, first, s3_env):
    """After a full run through the chart: the S3 secret key is in no custom resource (spec or status), Event,
    Job or pod object (they name the Secret, never its value), log line (operator, Dask controller, Prefect
    server, every stage pod) or parameter of the MOUS's Prefect flow run. (The test bed's access key ID is the
    word "mousflow", which is everywhere for other reasons: the secret key is what is looked for.)"""
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    assert len(secret) >= 12 and secret != "mousflow"
    uid = first["doc"]["spec"]["uid"]
    texts = {kind: cluster.kubectl("get", kind, "-n", NS, "-o", "yaml")
             for kind in ("mous", "events", "jobs", "pods", "configmaps", "daskclusters")}
    for deployment in (OPERATOR, f"{FULLNAME}-dask-controller", f"{FULLNAME}-prefect"):
        texts[f"log of {deployment}"] = cluster.kubectl("logs", "-n", NS, f"deployment/{deployment}",
                                                        "--all-containers", "--tail=-1", check=False)
    stage_pods = [p for p in json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
                  if p["metadata"].get("labels", {}).get("job-name")]
    assert stage_pods, "no stage pod left to read the logs of"
    for pod in stage_pods:
        texts[f"log of {pod['metadata']['name']}"] = cluster.kubectl("logs", "-n", NS, pod["metadata"]["name"],
                                                                     "--all-containers", check=False)
    flow_run = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/services/{FULLNAME}-prefect:http/proxy/"
                               f"api/flow_runs/{first['status']['flowRunId']}")
    assert uid in flow_run  # the flow run's parameters were read
    texts["Prefect flow run"] = flow_run
    leaks = [where for where, text in texts.items() if secret in text]
    assert not leaks, f"the S3 secret key appears in: {leaks}"


def _rfc3339(text: str) -> datetime.datetime:
    """Prometheus' timestamps carry nanoseconds, which fromisoformat does not take: cut them to microseconds."""
    match = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    whole, fraction, zone = match.groups()
    stamp = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return stamp + datetime.timedelta(microseconds=int(((fraction or "") + "000000")[:6]))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_prometheus_scrapes_the_operator_and_evaluates_the_charts_rules_and_dashboard(
        cluster, release, first, tmp_path):
    """Debian's Prometheus server (hack/testbed/prometheus.sh) on the host scrapes the installed operator's
    metrics Service, with the chart's PrometheusRule groups as its rule files: it reads the KPI after the one
    delivery, every rule evaluates without error (the KPI alert as the delivery's own dates say, no other alert
    for a healthy release), and every query of the chart's Grafana dashboard runs."""
    import urllib.parse
    import urllib.request

    prom_dir = Path(subprocess.run([str(REPO / "hack" / "testbed" / "prometheus.sh")], capture_output=True,
                                   text=True, check=True).stdout.strip().splitlines()[-1])
    docs = [d for d in yaml.safe_load_all(cluster.helm(
        "template", RELEASE, str(CHART), "-n", NS, *release["args"], "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.grafanaDashboard.enabled=true")) if d]
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    [dashboard] = [json.loads(v) for d in docs if d["kind"] == "ConfigMap"
                   and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1" for v in d["data"].values()]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    service = cluster.get("service", f"{FULLNAME}-metrics", NS)
    target = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [{"job_name": "mousflow-operator", "static_configs": [{"targets": [target]}]}]}))
    check = subprocess.run([str(prom_dir / "promtool"), "check", "config", str(tmp_path / "prometheus.yaml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen([str(prom_dir / "prometheus"), f"--config.file={tmp_path / 'prometheus.yaml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)

    def api(path: str, **params) -> dict:
        url = f"http://127.0.0.1:{port}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(query: str) -> float | None:
        result = api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        def scraped():
            try:
                up = api("targets")["activeTargets"]
            except OSError:
                return False
            return up and up[0]["health"] == "up" and value("mousflow_mous") is not None

        cluster.wait_until(f"Prometheus scraping {target}", scraped, timeout=90, interval=1)
        # the KPI after exactly one delivery, as Prometheus stored it
        assert value('mousflow_mous{phase="Delivered"}') == 1.0
        assert value("sum(mousflow_stage_duration_seconds_count)") == float(len(STAGES))
        assert value('mousflow_qa2_verdicts_total{verdict="Pass"}') == 1.0
        assert value("mousflow_delivery_duration_seconds_count") == 1.0
        # every alerting rule of the chart loaded and evaluated without error; none fires for this release
        names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}

        # the KPI as stored; every rule must then be evaluated again after this moment (an evaluation racing the
        # first scrape saw no ratio yet and left the KPI alert inactive: CI, stop 19)
        kpi = value("min(mousflow_delivered_within_deadline_ratio)")
        assert kpi is not None
        stored_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)

        def evaluated():
            loaded = [r for g in api("rules")["groups"] for r in g["rules"]]
            return {r["name"] for r in loaded} == names and all(
                r.get("lastEvaluation", "").startswith("2") and r["health"] == "ok"
                and _rfc3339(r["lastEvaluation"]) > stored_at
                for r in loaded) and loaded

        loaded = cluster.wait_until("every rule evaluated after the KPI was stored", evaluated, timeout=60, interval=1)
        # the KPI alert follows the one delivery's own dates (the simulated MOUS may have been observed long ago,
        # then its delivery was late and the KPI is below target); nothing else fires for a healthy release
        states = {r["name"]: r["state"] for r in loaded}
        assert (states.pop("MousflowDeliveryKPIBelowTarget") == "inactive") == (kpi >= 0.9), (kpi, loaded)
        assert set(states.values()) == {"inactive"}, states
        # every query of the dashboard runs against the live series
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        for expr in exprs:
            api("query", query=expr)  # raises unless Prometheus parsed and evaluated it
        assert value("sum by (phase) (mousflow_mous)") is not None
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _assert_kpi_metrics_after_one_delivery(text: str, doc: dict) -> None:
    """The live operator's endpoint, read as Prometheus reads it (prometheus_client's parser): the KPI and
    workload families after exactly one delivered MOUS, with Prometheus's conventions (units in the names, no
    per-MOUS label). The KPI itself from the MOUS's own dates: delivered now, due 30 days after fullyObservedAt
    (the simulated MOUS may have been observed long ago)."""
    from datetime import UTC, datetime, timedelta

    raw = doc["spec"]["fullyObservedAt"]  # YAML may have made it a datetime already
    observed = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    observed = observed if observed.tzinfo else observed.replace(tzinfo=UTC)
    on_time = datetime.now(UTC) <= observed + timedelta(days=30)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("mousflow_mous", (("phase", "Delivered"),))] == 1.0, text
    assert value[("mousflow_delivery_duration_seconds_count", ())] == 1.0
    assert value[("mousflow_delivered_within_deadline_ratio", ())] == (1.0 if on_time else 0.0)
    assert value[("mousflow_mous_overdue", ())] == 0.0
    assert value[("mousflow_qa2_verdicts_total", (("verdict", "Pass"),))] == 1.0
    for stage in STAGES:
        assert value[("mousflow_stage_duration_seconds_count", (("stage", stage),))] == 1.0, stage
        # measured inside the stage pod (the cgroup's peak) and what its pod asked for
        assert value[("mousflow_stage_peak_memory_bytes_count", (("stage", stage),))] == 1.0, stage
        assert value[("mousflow_stage_peak_memory_bytes_sum", (("stage", stage),))] > 50e6, stage
        assert value[("mousflow_stage_requested_memory_bytes_count", (("stage", stage),))] == 1.0, stage
    assert value[("mousflow_queue_depth", (("le_days", "+Inf"),))] == 0.0
    per_mous = {"uid", "name", "mous", "namespace", "flow_run"}
    for family in families.values():
        assert family.name.startswith("mousflow_"), family.name
        assert not per_mous & {k for s in family.samples for k in s.labels}, family.name


def test_imaging_runs_over_dask_worker_pods_sized_per_chunk(cluster, first, history_uri):
    doc = first["doc"]
    # two worker pods at least, each sized for one chunk by the model (no imaging-worker history yet)
    workers = first["workers"]
    assert len(workers) >= 2, first
    per_chunk = estimate_stage_resources("imaging-worker", _demand(doc), 1)
    for resources in workers.values():
        assert resources["requests"]["memory"] == f"{per_chunk.memory_bytes // MiB}Mi", (resources, per_chunk)
        assert resources["limits"]["memory"] == f"{per_chunk.memory_limit_bytes // MiB}Mi", (resources, per_chunk)
        assert resources["requests"]["cpu"] == "100m", resources
    # the DaskCluster belonged to the imaging stage pod (deleting the Job deletes it: test_imaging_dask.py)
    (imaging_job,) = jobs_by_stage(cluster, NS, doc["spec"]["uid"])["imaging"]
    owners = first["owners"]
    assert owners and owners[0]["kind"] == "Pod" and owners[0]["name"].startswith(imaging_job), (owners, imaging_job)
    run = doc["spec"]["output"]["uri"]
    summary = Location(f"{run}/imaging/summary.json").read_json()
    # (>= 2: a second, cluster-wide controller on a shared cluster may add workers of its own)
    assert summary["scaleout"]["mode"] == "kubernetes" and summary["scaleout"]["workers_used"] >= 2, summary
    assert summary["chunks_computed"] == 16 // CHANNEL_CHUNK + 32 // CHANNEL_CHUNK, summary
    # the cubes the worker pods wrote: every channel imaged but a flagged one (the spur), the simulated line found
    assert summary["cubes"]["spw1"]["line_channels"], summary["cubes"]
    for spw in ("spw0", "spw1"):
        image = ImageStore(Location(f"{run}/imaging/cube_{spw}.zarr")).read("image")
        imaged = np.isfinite(image).any(axis=(1, 2))
        assert imaged.sum() >= 0.8 * imaged.size, (spw, imaged)
    # gone afterwards: no DaskCluster, no scheduler or worker pod
    cluster.wait_until("the Dask cluster to be gone", lambda: not json.loads(cluster.kubectl(
        "get", "daskclusters,pods", "-n", NS, "-l", "dask.org/cluster-name", "-o", "json"))["items"], timeout=120)
    assert not json.loads(cluster.kubectl("get", "daskclusters", "-n", NS, "-o", "json"))["items"]
    assert_dask_rbac_was_enough(cluster, NS, f"{FULLNAME}-dask-controller")
    # the operator recorded every stage's measured peak under the chart's history prefix
    history = History(Location(history_uri))
    for stage in (*STAGES, "imaging-worker"):
        assert [r.uid for r in history.records(stage)] == [doc["spec"]["uid"]], stage


# ----------------------------------------------------- the second MOUS: in flight during an upgrade, learned size
@pytest.fixture(scope="module")
def second(cluster, release, first, sim, history_uri, module_s3) -> dict:
    """A second MOUS of the same kind, applied once the first is Delivered; `helm upgrade` (a changed operator
    setting) replaces the operator while it is Processing; it is then Delivered. What the tests below check:
    the history as it was before it ran, its status before the upgrade, the operator pods before and after."""
    history = History(Location(history_uri))
    learned = {stage: history.records(stage)[0] for stage in STAGES}  # the first MOUS's, before the second runs
    doc = apply_mous(cluster, NS, sim, "helm-b", "b2", imaging={"channelChunk": CHANNEL_CHUNK})
    uid = doc["spec"]["uid"]
    cluster.wait_until("the calibration Job of helm-b", lambda: "calibration" in jobs_by_stage(cluster, NS, uid),
                       timeout=180)
    old_pod = pods_of(cluster, NS, "operator")[0]["metadata"]["uid"]
    before = cluster.get("mous", "helm-b", NS)["status"]
    # a changed operator setting rolls the operator (Recreate: the old pod goes before the new one starts)
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", NS, *release["args"], "--set", "operator.maxProcessing=3",
                 "--wait", "--timeout", "5m", timeout=330)
    new_pods = pods_of(cluster, NS, "operator")
    status = wait_delivered(cluster, NS, "helm-b", OPERATOR, timeout=1800)
    return {"doc": doc, "learned": learned, "before": before, "old_pod": old_pod, "new_pods": new_pods,
            "status": status}


def test_upgrade_with_a_mous_in_flight_lets_it_finish(cluster, second):
    doc, before = second["doc"], second["before"]
    assert before["phase"] == "Processing", before
    assert (before.get("stages", {}).get("packaging") or {}).get("state") != "Succeeded"
    new_pods = second["new_pods"]
    assert [p["metadata"]["uid"] for p in new_pods] != [second["old_pod"]]
    env = {e["name"]: e.get("value") for e in new_pods[0]["spec"]["containers"][0]["env"]}
    assert env["MOUSFLOW_MAX_PROCESSING"] == "3"
    assert second["status"]["qa2"]["verdict"] == "Pass"
    assert_delivered_products(doc)
    # the new operator adopted the running work: still one Job per stage, none started twice
    assert {s: len(j) for s, j in jobs_by_stage(cluster, NS, doc["spec"]["uid"]).items()} == \
        {"calibration": 1, "imaging": 1, "packaging": 1}
    _assert_rbac_was_enough(cluster)


def test_the_second_mous_of_a_kind_is_sized_from_the_first_ones_history(cluster, second, history_uri, module_s3):
    doc = second["doc"]
    demand = _demand(doc)
    jobs = stage_jobs(cluster, NS, doc["spec"]["uid"])
    for stage in STAGES:
        record = second["learned"][stage]
        assert JobDemand(**record.demand) == demand, stage  # the same kind of MOUS
        requested = jobs[stage][0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
        model = estimate_stage_resources(stage, demand, 1)
        sized = estimate_stage_resources(stage, demand, 1, learned_factor=record.memory_ratio)
        assert requested == f"{sized.memory_bytes // MiB}Mi", (stage, requested, sized, record)
        assert requested != f"{model.memory_bytes // MiB}Mi", (stage, requested, model, record)
        # sized from one run of history: what it asked for is within 1.5 x what it then used, with no OOM kill
        stage_status = second["status"]["stages"][stage]
        # the peak the stage measured: in its status, else (a status rewritten around the upgrade) the record
        # the flow added to the history for this MOUS
        peak = ((stage_status.get("resources") or {}).get("used") or {}).get("peakMemoryBytes") or next(
            (r.peak_bytes for r in History(Location(history_uri)).records(stage) if r.uid == doc["spec"]["uid"]),
            None)
        assert peak, (stage, stage_status)
        print(f"{stage}: requested {requested}, measured peak {peak / MiB:.0f}Mi, "
              f"ratio {sized.memory_bytes / peak:.2f}")
        assert sized.memory_bytes / peak <= 1.5, (stage, requested, peak)
        assert not [r for r in stage_status.get("retries", []) if r["reason"] != "ResizedInPlace"], stage_status


# ---------------------------------------------------------------------------------------------- the uninstall
def test_helm_uninstall_with_the_operator_running_keeps_the_data_and_no_finalizer(cluster, release, first, second,
                                                                                  sim):
    # as the README says, nothing before it: the chart's pre-delete hook stops the operator while its Role exists
    assert pods_of(cluster, NS, "operator"), "the operator runs: nobody scaled it down"
    cluster.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "4m", timeout=270)
    release["installed"] = False
    cluster.wait_until("the operator, Dask controller and Prefect pods to go",
                       lambda: not any(pods_of(cluster, NS, c) for c in ("operator", "dask-controller",
                                                                          "prefect-server")), timeout=120)
    mouses = json.loads(cluster.kubectl("get", "mous", "-n", NS, "-o", "json"))["items"]
    assert sorted(m["metadata"]["name"] for m in mouses) == ["helm-a", "helm-b"]  # the CRD (crds/) and MOUSs stay
    for mous in mouses:
        assert mous["status"]["phase"] == "Delivered"
        # the stopped operator (or the hook) took its finalizer off: the MOUS can still be deleted without it
        assert "mousflow.io/finalizer" not in (mous["metadata"].get("finalizers") or []), mous["metadata"]
    for name in ("helm-a", "helm-b"):
        assert_delivered_products({"spec": {"delivery": {"uri": f"{sim}/delivered/{name}"}}})
    assert Location(f"{sim}/runs/helm-a/products/manifest.json").exists()
    # Prefect's flow-run history is kept too (helm.sh/resource-policy: keep)
    assert cluster.get("pvc", f"{FULLNAME}-prefect", NS)["status"]["phase"] == "Bound"
    assert cluster.get("crd", "mouses.mousflow.io")
    # the hook's Job, ServiceAccount and Roles went with it; nothing of the release is left
    left = cluster.kubectl("get", "jobs,serviceaccounts,roles,rolebindings,deployments", "-n", NS, "-o", "name")
    assert not [line for line in left.split() if FULLNAME in line], left
    # and a MOUS is deletable without any operator
    cluster.kubectl("delete", "mous", "helm-a", "-n", NS, "--timeout=60s", timeout=90)


# ------------------------------------------------------------------------------------------ the chart's MinIO
@pytest.fixture(scope="module")
def minio_image(cluster) -> str:
    """The test bed's MinIO image (containers/minio), built and imported if this cluster predates it."""
    repo_root = Path(__file__).resolve().parents[2]
    if os.geteuid() == 0:
        proc = subprocess.run([str(repo_root / "hack" / "testbed" / "images.sh"), "minio", "import"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for line in (repo_root / "hack" / "testbed" / "versions.env").read_text().splitlines():
        if line.startswith("MINIO_IMAGE="):
            return line.split("=", 1)[1]
    raise AssertionError("MINIO_IMAGE missing from hack/testbed/versions.env")


def test_the_charts_own_minio_with_generated_credentials(cluster, runner_image, minio_image):
    """The default S3 path: the chart's MinIO (restricted pod), a generated key kept across upgrades, buckets
    made by the post-install hook, and the operator wired to it."""
    ns = f"helm-minio-{SUFFIX}"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    repository, tag = runner_image.rsplit(":", 1)
    minio_repository, minio_tag = minio_image.rsplit(":", 1)
    args = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", f"minio.image.repository={minio_repository}", "--set", f"minio.image.tag={minio_tag}",
            "--set", "minio.image.pullPolicy=Never", "--set", "minio.persistence.enabled=false",
            "--set", "minio.buckets={mousflow,alma-products}",
            "--set", "prefect.database.sqlite.persistence.enabled=false", "--set", "prefect.ui=false"]
    try:
        # --wait, and the post-install hook (bucket creation) must succeed for install to return
        cluster.helm("install", "mm", str(CHART), "-n", ns, *args, "--wait", "--timeout", "5m", timeout=330)
        secret = cluster.get("secret", "mm-mousflow-s3", ns)["data"]
        assert len(secret["AWS_SECRET_ACCESS_KEY"]) > 40  # 32 random characters, base64
        minio = pods_of(cluster, ns, "minio")
        assert len(minio) == 1 and minio[0]["status"]["containerStatuses"][0]["ready"]
        code = ("import os, s3fs; fs = s3fs.S3FileSystem(client_kwargs={'endpoint_url': "
                "os.environ['MOUSFLOW_S3_ENDPOINT']}); fs.pipe('mousflow/probe', b'ok'); "
                "print(sorted(b.rstrip('/') for b in fs.ls('')), fs.cat('mousflow/probe').decode())")
        out = cluster.kubectl("exec", "-n", ns, "deploy/mm-mousflow-operator", "--", "python", "-c", code)
        assert out.strip() == "['alma-products', 'mousflow'] ok", out
        cluster.helm("upgrade", "mm", str(CHART), "-n", ns, *args, "--wait", "--timeout", "5m", timeout=330)
        assert cluster.get("secret", "mm-mousflow-s3", ns)["data"] == secret  # the generated key survives
    finally:
        try:
            cluster.helm("uninstall", "mm", "-n", ns, "--wait", "--timeout", "2m", timeout=150)
        except AssertionError as exc:
            print(exc)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
