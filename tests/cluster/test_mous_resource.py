"""The MOUS CRD on a real API server, and simulated MOUSs in a real S3 (the test bed's MinIO)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from mousflow_operator.crd import crd_text


def _offline_examples() -> dict:
    """The example manifests of the offline parity test (tests/model/test_crd_parity.py), reused here."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "model" / "test_crd_parity.py"
    spec = importlib.util.spec_from_file_location("crd_parity_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXAMPLES


EXAMPLES = _offline_examples()

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def mous_crd(cluster):
    cluster.kubectl("apply", "-f", "-", input=crd_text())
    cluster.wait_until("the MOUS CRD to be established", lambda: "True" in cluster.kubectl(
        "get", "crd", "mouses.mousflow.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"))
    return "mouses.mousflow.io"


def test_kubectl_get_mous_shows_the_printer_columns(cluster, namespace, mous_crd):
    doc = json.loads(json.dumps(EXAMPLES["minimal"][0]))
    doc["metadata"]["name"] = f"mous-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    cluster.kubectl("patch", "mous", doc["metadata"]["name"], "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {"phase": "Processing", "stage": "imaging",
                                                                  "qa2": {"verdict": "Pass"},
                                                                  "predictedCompletion": "2030-01-01T00:00:00Z"}}))
    table = cluster.kubectl("get", "mous", "-n", namespace)
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header == ["NAME", "PHASE", "STAGE", "QA2", "AGE", "ETA"]
    assert row[:4] == [doc["metadata"]["name"], "Processing", "imaging", "Pass"]
    assert row[5] == "2030-01-01T00:00:00Z"  # a future moment, not `<invalid>` (a `date` column's view of it)
    # the status subresource: a spec update does not touch the status, and vice versa
    got = cluster.get("mous", doc["metadata"]["name"], namespace)
    assert got["status"]["phase"] == "Processing" and got["spec"]["band"] == 3


@pytest.mark.parametrize("name", [n for n, (doc, _) in EXAMPLES.items() if "status" not in doc])
def test_api_server_and_model_agree(cluster, namespace, mous_crd, name):
    """Server-side dry runs with kubectl's default strict field validation: the API server accepts exactly
    the manifests the pydantic model accepts."""
    doc, expected = EXAMPLES[name]
    doc = json.loads(json.dumps(doc))
    doc["metadata"]["name"] = f"parity-{uuid.uuid4().hex[:6]}"
    out = subprocess.run([cluster.kubectl_bin, "--kubeconfig", cluster.kubeconfig, "apply", "-n", namespace,
                          "--dry-run=server", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True)
    assert (out.returncode == 0) is expected, out.stderr


def _s3_env(cluster) -> dict[str, str]:
    s3 = cluster.s3
    if not s3.get("S3_ENDPOINT_URL"):
        pytest.fail("the test bed did not publish its S3 endpoint (s3.env)")
    return {**os.environ, "MOUSFLOW_S3_ENDPOINT": s3["S3_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"], "AWS_DEFAULT_REGION": s3.get("AWS_DEFAULT_REGION",
                                                                                              "us-east-1")}


def _mousflow(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mousflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def bucket(cluster):
    env = _s3_env(cluster)
    name = f"mousflow-test-{uuid.uuid4().hex[:8]}"
    code = ("import s3fs, os; fs = s3fs.S3FileSystem(client_kwargs={'endpoint_url': os.environ["
            "'MOUSFLOW_S3_ENDPOINT']}); fs.mkdir(" + repr(name) + ")")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    return name, env


def test_simulate_into_s3_and_process_it_there(bucket):
    name, env = bucket
    out = f"s3://{name}/mous/tiny"
    proc = _mousflow(env, "simulate", "--preset", "tiny", "--out", out, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    check = f"""
import os, yaml, s3fs, xradio.measurement_set
from xradio.schema.check import check_datatree
from mousflow.storage.location import Location
from mousflow.storage.zarr_io import open_processing_set
root = Location({out!r})
assert root.is_committed()
doc = yaml.safe_load(root.join('mous.yaml').read_text())
eb = Location(doc['spec']['executionBlocks'][0]['uri'])
assert eb.uri.startswith('s3://'), eb.uri
issues = check_datatree(open_processing_set(eb))
assert not issues, str(issues)
print('ok', len(open_processing_set(eb).children))
"""
    proc = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr
    # every stage reads its manifest and data, and writes its outputs and checkpoint, in S3 only
    for stage in ("calibration", "imaging", "packaging"):
        proc = _mousflow(env, "stage", stage, "--manifest", f"{out}/mous.yaml")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    listing = subprocess.run([sys.executable, "-c", f"""
import s3fs, os
fs = s3fs.S3FileSystem(client_kwargs={{'endpoint_url': os.environ['MOUSFLOW_S3_ENDPOINT']}})
print('\\n'.join(fs.ls('{name}/mous/tiny/output/checkpoints')))
print(fs.cat('{name}/mous/tiny/output/products/qa2.json').decode())
"""], env=env, capture_output=True, text=True, timeout=60)
    for stage in ("calibration", "imaging", "packaging"):
        assert f"{stage}.json" in listing.stdout, listing.stderr
    assert '"verdict": "Pass"' in listing.stdout


def test_missing_bucket_is_a_one_line_error(bucket):
    _, env = bucket
    proc = _mousflow(env, "simulate", "--preset", "tiny", "--out", f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "bucket" in err, err


def test_mous_yaml_from_s3_is_a_valid_manifest(bucket):
    name, env = bucket
    code = f"""
import yaml
from mousflow.storage.location import Location
from mousflow.model import load_manifest
print(load_manifest(Location('s3://{name}/mous/tiny/mous.yaml').read_text()).spec.uid)
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("uid://"), proc.stderr
