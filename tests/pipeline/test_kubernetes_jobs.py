"""Stage Job manifests, pod-termination classification and the resource model (pure functions; the real
cluster runs them in tests/cluster/test_stage_jobs.py)."""

from mousflow.pipeline.kubernetes import (
    JobSettings,
    build_stage_job_spec,
    classify_finished_pod,
    classify_pod_termination,
    job_name,
)
from mousflow.pipeline.resources import JobDemand, ResourceRequest, estimate_stage_resources

SETTINGS = JobSettings(namespace="alma", image="localhost/mousflow/runner:dev", s3_secret="s3-creds",
                       s3_endpoint="http://minio:9000")
REQUEST = ResourceRequest(cpu=2.0, memory_bytes=3 * 2**30, memory_limit_bytes=4 * 2**30)


def _job(**kw):
    args = dict(uid="uid://A001/X1296/X133", stage="imaging", attempt=1, manifest_uri="s3://b/x/mous.yaml",
                resources=REQUEST, threads=2)
    args.update(kw)
    return build_stage_job_spec(SETTINGS, **args)


def test_job_runs_the_stage_entry_point_with_computed_resources():
    job = _job()
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["mousflow", "stage", "imaging", "--manifest", "s3://b/x/mous.yaml", "--threads", "2"]
    assert c["resources"] == {"requests": {"cpu": "2000m", "memory": "3072Mi"}, "limits": {"memory": "4096Mi"}}
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_credentials_come_from_the_secret_never_from_the_mous():
    env = {e["name"]: e for e in _job()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds",
                                                                        "key": "AWS_SECRET_ACCESS_KEY"}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert env["MOUSFLOW_S3_ENDPOINT"]["value"] == "http://minio:9000"


def test_stage_pods_get_the_configured_region_and_none_unless_configured():
    from dataclasses import replace

    from mousflow.pipeline.launchers import job_settings_from_env

    settings = job_settings_from_env("kubernetes?namespace=alma", {"AWS_DEFAULT_REGION": "eu-west-1"})
    assert settings.s3_region == "eu-west-1" and job_settings_from_env("kubernetes", {}).s3_region is None
    env = {e["name"]: e.get("value") for e in build_stage_job_spec(
        replace(SETTINGS, s3_region="eu-west-1"), uid="uid://A001/X1/X2", stage="calibration", attempt=1,
        manifest_uri="s3://b/m", resources=REQUEST, threads=1)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_DEFAULT_REGION" not in {e["name"] for e in _job()["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_pods_meet_the_restricted_pod_security_profile():
    pod = _job()["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False


def test_job_names_are_deterministic_and_valid():
    a, b = job_name("uid://A001/X1/X2", "calibration", 1), job_name("uid://A001/X1/X2", "calibration", 1)
    assert a == b and a != job_name("uid://A001/X1/X3", "calibration", 1) != job_name("uid://A001/X1/X2",
                                                                                         "calibration", 2)
    assert len(a) <= 63 and a == a.lower()


def test_oom_kill_is_recognised_with_exit_code_137_and_0():
    for code in (137, 0):
        status = {"containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": code}}}]}
        assert classify_pod_termination(status)[0] == "OOMKilled"
    ok = {"containerStatuses": [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}
    assert classify_pod_termination(ok) == ("", "")
    failed = {"containerStatuses": [{"state": {"terminated": {"reason": "Error", "exitCode": 5}}}]}
    assert classify_pod_termination(failed)[0] == "Error"
    assert classify_pod_termination({"reason": "Evicted", "message": "node low on memory"})[0] == "Interrupted"


def test_deleted_or_signalled_pods_are_interruptions_not_failures():
    assert classify_pod_termination(None)[0] == "Interrupted"
    for code, signame in ((143, "SIGTERM"), (137, "SIGKILL")):
        status = {"containerStatuses": [{"state": {"terminated": {"reason": "Error", "exitCode": code}}}]}
        reason, message = classify_pod_termination(status)
        assert reason == "Interrupted" and signame in message
    # the kernel's OOM kill also ends in 137, but its reason says what happened: more memory, not a rerun
    oom = {"containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}
    assert classify_pod_termination(oom)[0] == "OOMKilled"
    # a deleted pod may still be terminating, its container running, when the Job is already failed
    terminating = {"metadata": {"name": "p", "deletionTimestamp": "2026-11-22T06:30:00Z"},
                   "status": {"containerStatuses": [{"state": {"running": {}}}]}}
    assert classify_finished_pod(terminating)[0] == "Interrupted"
    assert classify_finished_pod(None)[0] == "Interrupted"
    assert classify_finished_pod({"metadata": {"name": "p"}, "status": oom})[0] == "OOMKilled"


def test_resource_model_scales_with_the_job_not_a_fixed_size():
    small = JobDemand(rows_per_window=20_000, correlations=2, max_channels=64, total_channels=256)
    large = JobDemand(rows_per_window=400_000, correlations=2, max_channels=64, total_channels=256)
    assert estimate_stage_resources("calibration", large).memory_bytes > \
        3 * estimate_stage_resources("calibration", small).memory_bytes
    # an imaging worker's memory depends on its chunk, not on the cube's number of channels
    narrow = JobDemand(rows_per_window=50_000, correlations=2, max_channels=1000, total_channels=1000)
    wide = JobDemand(rows_per_window=50_000, correlations=2, max_channels=80_000, total_channels=80_000)
    assert estimate_stage_resources("imaging-worker", narrow) == estimate_stage_resources("imaging-worker", wide)
    r = estimate_stage_resources("imaging-worker", narrow)
    assert r.memory_limit_bytes > r.memory_bytes
    more = r.scaled(1.5, cap_bytes=2**40)
    assert more.memory_bytes == int(r.memory_bytes * 1.5)
    assert r.scaled(100, cap_bytes=2**31).memory_limit_bytes == 2**31


def test_jobs_are_owned_by_their_mous_from_creation():
    from dataclasses import replace

    owned = build_stage_job_spec(replace(SETTINGS, owner=("tiny", "0b5e-uid")), uid="uid://A001/X1/X2",
                                 stage="imaging", attempt=1, manifest_uri="s3://b/x/mous.yaml", resources=REQUEST,
                                 threads=1)
    (ref,) = owned["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "mousflow.io/v1alpha1", "kind": "MOUS", "name": "tiny", "uid": "0b5e-uid",
                   "controller": False, "blockOwnerDeletion": False}
    assert "ownerReferences" not in _job()["metadata"]


def test_memory_quantities_parse_and_bad_ones_say_so():
    import pytest

    from mousflow.pipeline.resources import parse_memory

    assert parse_memory("512Mi") == 512 * 2**20 and parse_memory("64Gi") == 64 * 2**30
    assert parse_memory("1G") == 10**9 and parse_memory("1048576") == 2**20
    for bad in ("", "lots", "-1Gi", "12Xi"):
        with pytest.raises(ValueError, match="not a memory quantity"):
            parse_memory(bad)
