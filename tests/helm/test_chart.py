"""helm/mousflow rendered with `helm template` over several value sets, checked object by object; bad values
rejected by values.schema.json or the chart's own checks with a clear message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from mousflow_operator.crd import CRD_FILES, crd_text

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "mousflow"
DASK_CRDS_CHART = CHART / "charts" / "dask-kubernetes-crds"
NS = "mf-test"
HOOK = "helm.sh/hook"


def _run(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, *sets: str, expect_ok: bool = True):
    args = ["template", "rel", str(CHART), "--namespace", NS]
    for s in sets:
        args += ["--set", s]
    proc = _run(helm, *args)
    if not expect_ok:
        return proc
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name_suffix):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, [(d["kind"], d["metadata"]["name"]) for d in docs]
    return found[0]


def env_of(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def rules_of(role) -> dict:
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def release_objects(docs):
    """What the release itself holds (helm template also prints the hooks)."""
    return [d for d in docs if HOOK not in d["metadata"].get("annotations", {})]


def operator_env(docs) -> dict:
    return env_of(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0])


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def test_crd_in_the_chart_is_byte_identical_to_the_operators():
    """The chart ships a copy (crds/ must be a real file for `helm package`/`helm pull` users); this keeps the
    single source, operator/mousflow_operator/crds/, and the copy from drifting apart."""
    for file in CRD_FILES:
        assert (CHART / "crds" / file).read_text() == crd_text(file), \
            f"cp operator/mousflow_operator/crds/{file} helm/mousflow/crds/"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(CRD_FILES)


def _package_dask_crds() -> Path:
    import dask_kubernetes

    return Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / \
        "crds"


def test_dask_crds_in_the_chart_are_the_pinned_packages():
    """The dask-kubernetes CRDs come from the pinned package (the controller runs that package's code): a copy
    in the subchart, byte for byte, named after the version it came from."""
    from importlib.metadata import version

    package = _package_dask_crds()
    copied = sorted(p.name for p in (DASK_CRDS_CHART / "crds").iterdir())
    assert copied == sorted(p.name for p in package.glob("*.yaml")) == \
        ["daskautoscaler.yaml", "daskcluster.yaml", "daskjob.yaml", "daskworkergroup.yaml"]
    for name in copied:
        assert (DASK_CRDS_CHART / "crds" / name).read_bytes() == (package / name).read_bytes(), \
            f"cp {package}/*.yaml {DASK_CRDS_CHART / 'crds'}/"
    pinned = version("dask-kubernetes")
    assert yaml.safe_load((DASK_CRDS_CHART / "Chart.yaml").read_text())["version"] == pinned
    dependency = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]
    assert dependency == [{"name": "dask-kubernetes-crds", "version": pinned, "condition": "dask.operator.enabled"}]


def _crds(helm, *sets):
    args = ["template", "rel", str(CHART), "--include-crds"]
    for s in sets:
        args += ["--set", s]
    proc = _run(helm, *args)
    assert proc.returncode == 0, proc.stderr
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(proc.stdout)
            if d and d["kind"] == "CustomResourceDefinition"}


def test_helm_installs_those_crds_and_the_dask_ones_only_with_the_dask_operator(helm):
    ours = [yaml.safe_load(crd_text(f)) for f in CRD_FILES]  # the MOUS and the MOUSCampaign
    crds = _crds(helm)
    for crd in ours:
        assert crds.pop(crd["metadata"]["name"]) == crd
    assert crds == {yaml.safe_load(p.read_text())["metadata"]["name"]: yaml.safe_load(p.read_text())
                    for p in _package_dask_crds().glob("*.yaml")}
    # a cluster that already runs the dask-kubernetes controller has its CRDs: the chart leaves them alone
    assert sorted(_crds(helm, "dask.operator.enabled=false")) == sorted(c["metadata"]["name"] for c in ours)


def test_chart_lints(helm):
    proc = _run(helm, "lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_install(helm):
    docs = render(helm)
    op = one(docs, "Deployment", "-operator")
    assert op["metadata"]["namespace"] == NS
    assert op["spec"]["replicas"] == 1 and op["spec"]["strategy"]["type"] == "Recreate"
    c = op["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:4] == ["mousflow", "operator", "--liveness", "http://0.0.0.0:8080/healthz"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert {"name": "health", "containerPort": 8080} in c["ports"]
    env = env_of(c)
    # stage pods' image, pull policy and credentials come from the operator's configuration
    assert env["MOUSFLOW_RUNNER_IMAGE"] == "mousflow/runner:0.1.0" == c["image"]
    assert env["MOUSFLOW_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["MOUSFLOW_NAMESPACES"] == NS
    assert env["MOUSFLOW_S3_SECRET"] == "rel-mousflow-s3"
    assert env["MOUSFLOW_S3_ENDPOINT_IN_CLUSTER"] == f"http://rel-mousflow-minio.{NS}.svc:9000"
    assert env["PREFECT_API_URL"] == f"http://rel-mousflow-prefect.{NS}.svc:4200/api"
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "rel-mousflow-s3",
                                                             "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["MOUSFLOW_METRICS_PORT"] == "9090"
    assert (env["MOUSFLOW_OOM_MEMORY_FACTOR"], env["MOUSFLOW_OOM_MAX_RETRIES"], env["MOUSFLOW_OOM_MEMORY_CAP"]) == \
        ("1.5", "3", "64Gi")
    assert (env["MOUSFLOW_RESIZE_IN_PLACE"], env["MOUSFLOW_POD_START_ERROR_SECONDS"],
            env["MOUSFLOW_API_OUTAGE_SECONDS"]) == ("true", "120", "300")
    # imaging over Dask worker pods, and a history of measured peaks in the chart's MinIO bucket
    assert (env["MOUSFLOW_DASK_SERVICE_ACCOUNT"], env["MOUSFLOW_DASK_MIN_WORKERS"], env["MOUSFLOW_DASK_MAX_WORKERS"],
            env["MOUSFLOW_DASK_WORKER_CPU"], env["MOUSFLOW_DASK_UNSCHEDULABLE_SECONDS"]) == \
        ("mousflow-imaging", "1", "4", "1", "120")
    assert env["MOUSFLOW_HISTORY"] == "s3://mousflow/history"
    # namespaced RBAC only, nothing cluster-wide, no Secrets, no deletes but a Job whose pod cannot start
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role = one(docs, "Role", "-operator")
    assert role["metadata"]["namespace"] == NS
    rules = rules_of(role)
    assert rules == {("mousflow.io", "mouses"): {"list", "watch", "patch", "create"},
                     ("mousflow.io", "mouses/status"): {"patch"}, ("", "events"): {"create"},
                     ("mousflow.io", "mouscampaigns"): {"list", "watch", "patch"},
                     ("mousflow.io", "mouscampaigns/status"): {"patch"},
                     ("batch", "jobs"): {"create", "list", "watch", "patch", "delete"},
                     ("batch", "jobs/status"): {"get"},
                     ("", "pods"): {"get", "list"}, ("", "pods/log"): {"get"}, ("", "pods/resize"): {"patch"},
                     ("", "namespaces"): {"get"}, ("kubernetes.dask.org", "daskclusters"): {"delete"}}
    assert [r["resourceNames"] for r in role["rules"] if r["resources"] == ["namespaces"]] == [[NS]]
    binding = one(docs, "RoleBinding", "-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-mousflow-operator", "namespace": NS}]
    assert op["spec"]["template"]["spec"]["serviceAccountName"] == "rel-mousflow-operator"
    # the chart's MinIO with generated credentials, its data and Prefect's SQLite on kept volumes
    minio = one(docs, "Deployment", "-minio")
    assert minio["spec"]["template"]["spec"]["containers"][0]["image"].startswith("quay.io/minio/minio:RELEASE.")
    secret = one(docs, "Secret", "-s3")
    assert secret["stringData"]["AWS_ACCESS_KEY_ID"] == "mousflow"
    assert len(secret["stringData"]["AWS_SECRET_ACCESS_KEY"]) == 32
    for pvc in by_kind(docs, "PersistentVolumeClaim"):
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert sorted(p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")) == \
        ["rel-mousflow-minio", "rel-mousflow-prefect"]
    prefect = one(docs, "Deployment", "-prefect")
    pc = prefect["spec"]["template"]["spec"]["containers"][0]
    assert pc["command"][:3] == ["prefect", "server", "start"] and pc["image"] == c["image"]
    assert env_of(pc)["PREFECT_API_DATABASE_CONNECTION_URL"] == "sqlite+aiosqlite:////data/prefect.db"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "rel-mousflow-prefect"}} in \
        prefect["spec"]["template"]["spec"]["volumes"]
    assert one(docs, "Service", "-prefect")["spec"]["ports"][0]["port"] == 4200
    # a metrics Service pointing at the operator's metrics port; no ServiceMonitor unless asked
    svc = one(docs, "Service", "-metrics")
    assert svc["spec"]["selector"].items() <= op["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert {"name": "metrics", "containerPort": 9090} in c["ports"]
    assert not by_kind(docs, "ServiceMonitor")


@pytest.mark.parametrize("sets", [
    (), ("minio.enabled=false", "s3.existingSecret=ext"), ("dask.operator.enabled=false",),
    ("prefect.database.type=postgresql", "prefect.database.postgresql.existingSecret=pg")])
def test_every_pod_meets_the_restricted_profile_with_resources(helm, sets):
    docs = render(helm, *sets)
    specs = dict(pod_specs(docs))
    assert specs
    for name, spec in specs.items():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name
        for v in spec.get("volumes", []):
            assert set(v) - {"name"} <= {"emptyDir", "persistentVolumeClaim", "secret", "configMap"}, v
        # only the pods that talk to the Kubernetes API get a token
        if not name.endswith(("-operator", "-dask-controller", "-uninstall")):
            assert spec["automountServiceAccountToken"] is False, name


def test_external_s3_turns_minio_off(helm):
    docs = render(helm, "s3.existingSecret=my-s3", "s3.endpoint=http://s3.storage.svc:9000")
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    assert not by_kind(docs, "Secret")
    env = env_of(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0])
    assert env["MOUSFLOW_S3_SECRET"] == "my-s3"
    assert env["MOUSFLOW_S3_ENDPOINT_IN_CLUSTER"] == env["MOUSFLOW_S3_ENDPOINT"] == "http://s3.storage.svc:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "my-s3", "key": "AWS_ACCESS_KEY_ID"}}


def test_aws_s3_needs_no_endpoint(helm):
    docs = render(helm, "minio.enabled=false", "s3.existingSecret=aws-creds", "s3.region=eu-west-1")
    env = env_of(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0])
    assert "MOUSFLOW_S3_ENDPOINT" not in env and "MOUSFLOW_S3_ENDPOINT_IN_CLUSTER" not in env
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1" and env["MOUSFLOW_S3_SECRET"] == "aws-creds"


def test_all_namespaces_gets_a_cluster_role_and_nothing_namespaced(helm):
    docs = render(helm, "operator.watchAllNamespaces=true")
    installed = release_objects(docs)
    assert not by_kind(installed, "Role") and not by_kind(installed, "RoleBinding")
    role = one(installed, "ClusterRole", f"-{NS}-operator")
    binding = one(installed, "ClusterRoleBinding", f"-{NS}-operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": "rel-mousflow-operator", "namespace": NS}
    ns_rule = [r for r in role["rules"] if r["resources"] == ["namespaces"]]
    assert ns_rule == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
    env = env_of(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0])
    assert env["MOUSFLOW_NAMESPACES"] == ""
    # the Dask controller watches all namespaces too; the imaging account is made per namespace (NOTES)
    controller = one(installed, "Deployment", "-dask-controller")["spec"]["template"]["spec"]["containers"][0]
    assert controller["command"][-1] == "--all-namespaces"
    assert one(installed, "ClusterRoleBinding", f"-dask-controller-{NS}")["roleRef"]["name"] == \
        one(installed, "ClusterRole", f"-dask-controller-{NS}")["metadata"]["name"]
    assert one(installed, "ClusterRole", f"-dask-client-{NS}")
    assert not [s for s in by_kind(installed, "ServiceAccount") if s["metadata"]["name"] == "mousflow-imaging"]
    # the uninstall hook releases finalizers everywhere, so it is granted that cluster-wide (and only for the hook)
    hook_role = one(docs, "ClusterRole", f"-uninstall-{NS}")
    assert hook_role["metadata"]["annotations"][HOOK] == "pre-delete"
    assert rules_of(hook_role) == {("mousflow.io", "mouses"): {"list", "patch"},
                                   ("mousflow.io", "mouscampaigns"): {"list", "patch"},
                                   ("kubernetes.dask.org", "daskclusters"): {"list", "patch"},
                                   ("kubernetes.dask.org", "daskautoscalers"): {"list", "patch"}}


def test_named_namespaces_get_a_role_each(helm):
    docs = render(helm, "operator.watchNamespaces={alma,alma-test}")
    installed = release_objects(docs)
    for suffix in ("-operator", "-dask-controller", "-dask-client"):
        roles, bindings = ({r["metadata"]["namespace"] for r in by_kind(installed, kind)
                            if r["metadata"]["name"].endswith(suffix)} for kind in ("Role", "RoleBinding"))
        assert roles == bindings == {"alma", "alma-test"}, suffix
    assert {s["metadata"]["namespace"] for s in by_kind(installed, "ServiceAccount")
            if s["metadata"]["name"] == "mousflow-imaging"} == {"alma", "alma-test"}
    assert not by_kind(docs, "ClusterRole")
    env = env_of(one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0])
    assert env["MOUSFLOW_NAMESPACES"] == "alma,alma-test"


def test_external_postgres_for_prefect(helm):
    docs = render(helm, "prefect.database.type=postgresql", "prefect.database.postgresql.existingSecret=pg",
                  "prefect.database.postgresql.secretKey=url")
    prefect = one(docs, "Deployment", "-prefect")
    env = env_of(prefect["spec"]["template"]["spec"]["containers"][0])
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == {"secretKeyRef": {"name": "pg", "key": "url"}}
    assert [p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")] == ["rel-mousflow-minio"]
    assert {"name": "data", "emptyDir": {}} in prefect["spec"]["template"]["spec"]["volumes"]


def test_service_monitor_selects_the_metrics_service(helm):
    docs = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    sm = one(docs, "ServiceMonitor", "-operator")
    svc = one(docs, "Service", "-metrics")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"


def test_metrics_off_means_no_service_and_no_port(helm):
    docs = render(helm, "metrics.enabled=false")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-metrics")]
    c = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "MOUSFLOW_METRICS_PORT" not in env_of(c) and all(p["name"] != "metrics" for p in c["ports"])


def test_the_dask_controller_runs_from_the_mousflow_image_on_namespaced_rbac(helm):
    docs = render(helm, "image.repository=registry.example/mousflow", "image.tag=1.2.3")
    controller = one(docs, "Deployment", "-dask-controller")
    spec = controller["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == "registry.example/mousflow:1.2.3" == operator_env(docs)["MOUSFLOW_RUNNER_IMAGE"]
    assert c["command"] == ["kopf", "run", "--standalone", "--liveness=http://0.0.0.0:8080/healthz",
                            "-m", "mousflow_operator.dask_controller", f"--namespace={NS}"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert controller["spec"]["replicas"] == 1 and controller["spec"]["strategy"]["type"] == "Recreate"
    assert spec["serviceAccountName"] == "rel-mousflow-dask-controller"
    # its Role in the watched namespace: the Dask resources, the pods, services and deployments it makes, Events;
    # nothing cluster-wide (no peering, no CRD or namespace watch), no Secrets, no webhooks
    role = one(docs, "Role", "-dask-controller")
    assert role["metadata"]["namespace"] == NS
    assert rules_of(role) == {
        ("kubernetes.dask.org", "daskclusters"): {"get", "list", "watch", "patch", "create", "delete"},
        ("kubernetes.dask.org", "daskworkergroups"): {"get", "list", "watch", "patch", "create"},
        ("kubernetes.dask.org", "daskautoscalers"): {"get", "list", "watch", "patch"},
        ("kubernetes.dask.org", "daskjobs"): {"get", "list", "watch", "patch"},
        ("kubernetes.dask.org", "daskjobs/status"): {"patch"},
        ("apps", "deployments"): {"get", "list", "create", "delete"},
        ("", "services"): {"get", "list", "watch", "patch", "create"},
        ("", "pods"): {"get", "list", "watch", "patch", "create"}, ("", "events"): {"create"}}
    assert one(docs, "RoleBinding", "-dask-controller")["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-mousflow-dask-controller", "namespace": NS}]
    # the imaging pods' account: what a Dask client does with its own cluster, bound in the watched namespace
    account = one(docs, "ServiceAccount", "mousflow-imaging")
    assert account["metadata"]["namespace"] == NS
    client = one(docs, "Role", "-dask-client")
    assert rules_of(client) == {
        ("kubernetes.dask.org", "daskclusters"): {"get", "list", "watch", "create", "delete"},
        ("kubernetes.dask.org", "daskautoscalers"): {"get", "list", "watch", "create", "patch", "delete"},
        ("kubernetes.dask.org", "daskworkergroups"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"}, ("", "services"): {"get", "list", "watch"}, ("", "pods/log"): {"get"}}
    assert one(docs, "RoleBinding", "-dask-client")["subjects"] == [
        {"kind": "ServiceAccount", "name": "mousflow-imaging", "namespace": NS}]


def test_a_cluster_that_runs_the_dask_controller_already(helm):
    docs = render(helm, "dask.operator.enabled=false")
    assert not [d for d in docs if "dask-controller" in d["metadata"]["name"]]
    # imaging pods still start worker pods, through the cluster's own controller
    assert operator_env(docs)["MOUSFLOW_DASK_SERVICE_ACCOUNT"] == "mousflow-imaging"
    assert one(docs, "ServiceAccount", "mousflow-imaging") and one(docs, "Role", "-dask-client")
    job = one(docs, "Job", "-uninstall")["spec"]["template"]["spec"]["containers"][0]
    assert "--dask" not in job["command"]
    assert rules_of(one(docs, "Role", "-uninstall-release")) == {("mousflow.io", "mouses"): {"list", "patch"},
                                                                 ("mousflow.io", "mouscampaigns"): {"list", "patch"}}


def test_dask_worker_pods_off_means_imaging_inside_its_own_pod(helm):
    docs = render(helm, "dask.workerPods=false", "dask.operator.enabled=false")
    assert not [d for d in docs if "dask" in d["metadata"]["name"] or d["metadata"]["name"] == "mousflow-imaging"]
    assert not [k for k in operator_env(docs) if k.startswith("MOUSFLOW_DASK")]


def test_the_storage_policy_reaches_the_operator_and_is_off_by_default(helm):
    import json

    from mousflow_operator.tenancy import Access, StoragePolicy

    assert "MOUSFLOW_STORAGE_POLICY" not in operator_env(render(helm))
    env = operator_env(render(helm, "tenancy.storagePolicy.alma-a.read={s3://archive/}",
                              "tenancy.storagePolicy.alma-a.write={s3://products/alma-a/,s3://scratch/alma-a/}"))
    policy = StoragePolicy.from_json(env["MOUSFLOW_STORAGE_POLICY"])
    assert policy.namespaces == {"alma-a": Access(("s3://archive/",), ("s3://products/alma-a/", "s3://scratch/alma-a/"))}
    assert json.loads(env["MOUSFLOW_STORAGE_POLICY"])["alma-a"]["read"] == ["s3://archive/"]


def test_history_is_on_by_default_and_off_when_empty(helm):
    assert operator_env(render(helm))["MOUSFLOW_HISTORY"] == "s3://mousflow/history"
    assert operator_env(render(helm, "minio.buckets={data,mousflow-history}",
                               "history.uri=s3://mousflow-history/peaks"))["MOUSFLOW_HISTORY"] == \
        "s3://mousflow-history/peaks"
    # with your own S3 the chart cannot know the buckets: any s3:// prefix
    assert operator_env(render(helm, "s3.existingSecret=ext", "history.uri=s3://archive/mousflow/history"))[
        "MOUSFLOW_HISTORY"] == "s3://archive/mousflow/history"
    assert "MOUSFLOW_HISTORY" not in operator_env(render(helm, "history.uri="))


def test_uninstall_hook_stops_the_operator_and_leaves_nothing(helm):
    docs = render(helm, "operator.watchNamespaces={alma,alma-test}")
    hooks = [d for d in docs if HOOK in d["metadata"].get("annotations", {})]
    minio_hook = [d for d in hooks if d["metadata"]["name"].endswith("-minio-buckets")]
    uninstall = [d for d in hooks if d not in minio_hook]
    assert sorted((d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in uninstall) == [
        ("Job", NS, "rel-mousflow-uninstall"),
        ("Role", "alma", "rel-mousflow-uninstall-release"), ("Role", "alma-test", "rel-mousflow-uninstall-release"),
        ("Role", NS, "rel-mousflow-uninstall-stop"),
        ("RoleBinding", "alma", "rel-mousflow-uninstall-release"),
        ("RoleBinding", "alma-test", "rel-mousflow-uninstall-release"),
        ("RoleBinding", NS, "rel-mousflow-uninstall-stop"),
        ("ServiceAccount", NS, "rel-mousflow-uninstall")]
    for d in uninstall:
        annotations = d["metadata"]["annotations"]
        assert annotations[HOOK] == "pre-delete", d["metadata"]["name"]
        policy = set(annotations["helm.sh/hook-delete-policy"].split(","))
        if d["kind"] == "Job":  # kept only after a failure, for its log, until its TTL
            assert policy == {"before-hook-creation", "hook-succeeded"} and d["spec"]["ttlSecondsAfterFinished"]
            assert int(annotations["helm.sh/hook-weight"]) == 0
        else:  # made before the Job, gone after it whatever its outcome
            assert policy == {"before-hook-creation", "hook-succeeded", "hook-failed"}, d["metadata"]["name"]
            assert int(annotations["helm.sh/hook-weight"]) < 0
    stop = one(uninstall, "Role", "-uninstall-stop")
    deployments = ["rel-mousflow-operator", "rel-mousflow-dask-controller"]
    assert stop["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": deployments, "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": deployments, "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    for release_role in [d for d in uninstall if d["kind"] == "Role" and d["metadata"]["name"].endswith("-release")]:
        assert rules_of(release_role) == {
            ("mousflow.io", "mouses"): {"list", "patch"}, ("mousflow.io", "mouscampaigns"): {"list", "patch"},
            ("kubernetes.dask.org", "daskclusters"): {"list", "patch"},
            ("kubernetes.dask.org", "daskautoscalers"): {"list", "patch"}}
    for binding in by_kind(uninstall, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-mousflow-uninstall", "namespace": NS}]
    job = one(uninstall, "Job", "-uninstall")["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "rel-mousflow-uninstall" and job["restartPolicy"] == "Never"
    assert job["containers"][0]["command"] == [
        "python", "-m", "mousflow_operator.uninstall", f"--namespace={NS}", "--deployment=rel-mousflow-operator",
        "--deployment=rel-mousflow-dask-controller", "--dask", "--watch-namespaces=alma,alma-test"]


@pytest.mark.parametrize("sets, message", [
    (("image.tag=latest",), "image.tag and minio.image.tag must name a version, not latest"),
    (("image.tag=v 1",), "/image/tag"),
    (("image.pullPolicy=Sometimes",), "pullPolicy"),
    (("operator.maxProcessing=0",), "maxProcessing"),
    (("operator.unknownKey=1",), "unknownKey"),
    (("operator.watchNamespaces={Not_A_Namespace}",), "watchNamespaces"),
    (("prefect.database.type=mysql",), "/prefect/database/type"),
    (("s3.endpoint=minio:9000", "s3.existingSecret=x"), "/s3/endpoint"),
    (("operator.resources.requests.memory=lots",), "memory"),
    (("minio.enabled=false",), "minio.enabled=false needs an external S3: set s3.existingSecret"),
    (("s3.endpoint=http://s3.example:9000",), "s3.endpoint is set but s3.existingSecret is not"),
    (("prefect.database.type=postgresql",), "needs prefect.database.postgresql.existingSecret"),
    (("operator.watchAllNamespaces=true", "operator.watchNamespaces={a}"), "are exclusive"),
    # values that would leave stage pods or the Dask controller without an image, S3 or an account
    (("image.repository=",), "/image/repository"),
    (("minio.enabled=false", "s3.existingSecret="), "minio.enabled=false needs an external S3"),
    (("dask.imagingServiceAccount=Imaging_Pods",), "/dask/imagingServiceAccount"),
    (("dask.imagingServiceAccount=",), "/dask/imagingServiceAccount"),
    (("dask.imagingServiceAccount=rel-mousflow-operator",), "must not be the operator's service account"),
    (("dask.minWorkers=5",), "dask.minWorkers=5 is above dask.maxWorkers=4"),
    (("dask.maxWorkers=0",), "/dask/maxWorkers"),
    (("dask.workerCpu=fast",), "/dask/workerCpu"),
    (("dask.unschedulableSeconds=-1",), "/dask/unschedulableSeconds"),
    (("tenancy.storagePolicy.alma-a.write={/data/alma-a}",), "/tenancy/storagePolicy/alma-a/write/0"),
    (("tenancy.storagePolicy.alma-a.delete={s3://x/}",), "/tenancy/storagePolicy/alma-a"),
    (("dask.operator.enabled=yes",), "/dask/operator/enabled"),
    (("history.uri=/tmp/history",), "/history/uri"),
    (("history.uri=s3://other-bucket/history",), "history.uri is in bucket other-bucket, which the chart's MinIO"),
])
def test_bad_values_are_rejected_with_a_clear_message(helm, sets, message):
    proc = render(helm, *sets, expect_ok=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert message in proc.stderr, proc.stderr
    # one error, on one line that names the culprit, not a wall of template output
    assert not proc.stdout


def test_lint_rejects_bad_values_too(helm):
    proc = _run(helm, "lint", str(CHART), "--set", "operator.maxProcessing=0")
    assert proc.returncode != 0 and "/operator/maxProcessing" in proc.stdout + proc.stderr
    # the chart's own checks (`fail`) are reported by lint (Helm lints in a tolerant mode); install and
    # template refuse them (test above)
    proc = _run(helm, "lint", str(CHART), "--set", "minio.enabled=false")
    assert "minio.enabled=false needs an external S3" in proc.stdout + proc.stderr


def test_flow_runs_in_pods_by_default_get_an_account_and_a_role_in_each_namespace_threads_none(helm):
    from mousflow_operator.flow_pod import FlowPodSettings

    threads = render(helm, "operator.flowRunner.mode=thread")
    assert operator_env(threads)["MOUSFLOW_FLOW_RUNNER"] == "thread"
    assert not [d for d in threads if "flow-runner" in d["metadata"]["name"]]
    default = release_objects(render(helm))
    assert operator_env(default)["MOUSFLOW_FLOW_RUNNER"] == "pod"
    assert [(d["kind"], d["metadata"]["namespace"]) for d in default if "flow-runner" in d["metadata"]["name"]] == \
        [("ServiceAccount", NS), ("Role", NS), ("RoleBinding", NS)]
    docs = render(helm, "operator.flowRunner.mode=pod", "operator.watchNamespaces={alma,alma-test}",
                  "operator.flowRunner.resources.limits.memory=3Gi")
    env = operator_env(docs)
    assert env["MOUSFLOW_FLOW_RUNNER"] == "pod" and env["MOUSFLOW_FLOW_RUNNER_MEMORY_LIMIT"] == "3Gi"
    account = env["MOUSFLOW_FLOW_RUNNER_SERVICE_ACCOUNT"]
    assert account == FlowPodSettings().service_account  # the chart's default is the operator's
    installed = release_objects(docs)
    assert {s["metadata"]["namespace"] for s in by_kind(installed, "ServiceAccount")
            if s["metadata"]["name"] == account} == {"alma", "alma-test"}
    roles = [r for r in by_kind(installed, "Role") if r["metadata"]["name"].endswith("-flow-runner")]
    bindings = [b for b in by_kind(installed, "RoleBinding") if b["metadata"]["name"].endswith("-flow-runner")]
    assert {r["metadata"]["namespace"] for r in roles} == {b["metadata"]["namespace"] for b in bindings} == \
        {"alma", "alma-test"}
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": b["metadata"]["namespace"]}]
               for b in bindings)
    # what the flow's launcher calls, and nothing else: no Secrets, no MOUSs
    assert rules_of(roles[0]) == {("batch", "jobs"): {"create", "get", "list", "patch", "delete"},
                                  ("batch", "jobs/status"): {"get"}, ("", "pods"): {"get", "list"},
                                  ("", "pods/log"): {"get"}, ("", "pods/resize"): {"patch"},
                                  ("kubernetes.dask.org", "daskclusters"): {"delete"}}
    everywhere = render(helm, "operator.flowRunner.mode=pod", "operator.watchAllNamespaces=true")
    assert [r["metadata"]["name"] for r in by_kind(everywhere, "ClusterRole") if "flow-runner" in r["metadata"]["name"]]
    assert not [d for d in everywhere if d["kind"] in ("Role", "ServiceAccount") and "flow-runner" in
                d["metadata"]["name"] + d["metadata"].get("namespace", "")]
    assert render(helm, "operator.flowRunner.mode=process", expect_ok=False).returncode != 0


def test_the_operator_runs_its_handlers_in_the_threads_and_connections_the_values_give(helm):
    """Each handler thread keeps an S3 client and an allocator arena of its own, each connection to the API
    server a TLS buffer (the operator's memory at scale, README): the chart passes the numbers on, and the
    operator reads them."""
    from mousflow_operator.settings import OperatorSettings

    env = operator_env(render(helm))
    default = OperatorSettings.from_env(env)
    assert (default.handler_threads, default.api_connections, env["MALLOC_ARENA_MAX"]) == (8, 32, "2")
    given = OperatorSettings.from_env(operator_env(render(helm, "operator.handlerThreads=3",
                                                          "operator.apiConnections=5")))
    assert (given.handler_threads, given.api_connections) == (3, 5)
    assert render(helm, "operator.apiConnections=0", expect_ok=False).returncode != 0
