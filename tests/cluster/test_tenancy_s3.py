"""Tenancy enforced by the object store itself, on the real test bed (issue 14, item 3): the namespace's S3
Secret holds credentials of a MinIO user of its own, whose policy allows reading the shared archive and
writing only the tenant's prefix. The operator runs with no storage policy (the admission check that would
refuse first is off), so this is the second wall: a MOUS applied with kubectl whose output is another
tenant's prefix fails in its first stage pod with AccessDenied (exit code 10, no automatic retry, one clear
message) and the other tenant's data is untouched; a MOUS within the tenant's own prefix is Delivered with the
same credentials."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import pytest
from harness import apply_mous, stage_jobs, wait_for_phase

from mousflow.errors import exit_code_of
from mousflow.storage.location import Location

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("host_s3")]
NAMESPACE_PREFIX = "tenant-s3"


def _policy(bucket: str, archive: str, own: str) -> dict:
    """Read the archive (the execution blocks and their manifests), read and write the tenant's own prefix."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": [f"arn:aws:s3:::{bucket}"]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/{archive}*"]},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{own}*"]}]}


@pytest.fixture(scope="module")
def tenant(cluster, mous_namespace, s3_env, tiny_s3_mous) -> dict:
    """A MinIO user for the module's namespace, limited to its prefix, in the namespace's S3 Secret; and tenant
    B's delivered product, which A must not be able to touch."""
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    endpoint = urlparse(s3_env["MOUSFLOW_S3_ENDPOINT"])
    admin = MinioAdmin(endpoint=endpoint.netloc, secure=endpoint.scheme == "https",
                       credentials=StaticProvider(s3_env["AWS_ACCESS_KEY_ID"], s3_env["AWS_SECRET_ACCESS_KEY"]))
    bucket, _, root = tiny_s3_mous.removeprefix("s3://").partition("/")
    user, secret, name = f"tenant-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, f"tenant-{uuid.uuid4().hex[:8]}"
    admin.user_add(user, secret)
    admin.policy_add(name, policy=_policy(bucket, f"{root}/eb", f"{root}/{mous_namespace}/"))
    admin.policy_set(name, user=user)
    cluster.kubectl("delete", "secret", "mousflow-s3", "-n", mous_namespace)
    cluster.kubectl("create", "secret", "generic", "mousflow-s3", "-n", mous_namespace,
                    f"--from-literal=AWS_ACCESS_KEY_ID={user}", f"--from-literal=AWS_SECRET_ACCESS_KEY={secret}")
    with pytest.MonkeyPatch.context() as mp:  # module scope: before the test's own host_s3
        for k, v in s3_env.items():
            mp.setenv(k, v)
        b_product = Location.of(f"{tiny_s3_mous}/tenant-b/delivered/cube.fits")
        b_product.write_bytes(b"tenant B's product")
    yield {"own": f"{tiny_s3_mous}/{mous_namespace}", "b": f"{tiny_s3_mous}/tenant-b", "user": user}
    admin.user_remove(user)
    admin.policy_remove(name)


def test_the_store_refuses_another_tenants_prefix_to_a_namespaces_credentials(cluster, mous_namespace,
                                                                              tiny_s3_mous, tenant, operator):
    ns, sim = mous_namespace, tiny_s3_mous
    intruder = apply_mous(cluster, ns, sim, "intruder", "e1a",
                          output={"uri": f"{tenant['b']}/runs/intruder"},
                          delivery={"uri": f"{tenant['b']}/delivered/intruder", "automatic": True})
    own = apply_mous(cluster, ns, sim, "own", "e2a", output={"uri": f"{tenant['own']}/runs/own"},
                     delivery={"uri": f"{tenant['own']}/delivered/own", "automatic": True})

    status = wait_for_phase(cluster, operator, ns, "intruder", ("Failed", "Delivered"), timeout=600)
    assert status["phase"] == "Failed", json.dumps(status, indent=1)
    stage = status["stages"]["calibration"]
    assert stage["state"] == "Failed" and "access refused" in stage["message"], stage
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "AccessDenied", degraded
    # one pod, exit code 10, and no automatic retry of a failure no retry can fix
    (job,) = stage_jobs(cluster, ns, intruder["spec"]["uid"])["calibration"]
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", f"job-name={job['metadata']['name']}",
                                      "-o", "json"))["items"]
    assert pods[-1]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == \
        exit_code_of("AccessDenied")
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json", "--field-selector",
                                        "involvedObject.name=intruder"))["items"]
    assert not any(e["reason"] == "RetryScheduled" for e in events)
    # tenant B's data is as it was, and the stage wrote nothing under B's prefix (what is there, the run's
    # status and manifest, the operator wrote with its own credentials: the admission policy guards those)
    b = Location.of(tenant["b"])
    assert b.join("delivered", "cube.fits").read_bytes() == b"tenant B's product"
    run = b.join("runs", "intruder")
    written = sorted(p.removeprefix(run.path).lstrip("/") for p in run.fs.find(run.path))
    print(f"under tenant B's prefix after the refused run: {written}")
    assert all(p.startswith("status/") or p.endswith(".yaml") for p in written), written

    # the same credentials within the tenant's own prefix: Delivered
    status = wait_for_phase(cluster, operator, ns, "own", ("Delivered", "Failed"), timeout=900)
    assert status["phase"] == "Delivered", json.dumps(status, indent=1)
    assert Location(own["spec"]["delivery"]["uri"]).join("manifest.json").read_json()["qa2"] == "Pass"
