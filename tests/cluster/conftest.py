"""Session fixture for tests that need a real Kubernetes cluster (pytest marker ``cluster``).

* If ``KUBECONFIG`` points at a reachable cluster, that cluster is used as it is and left running.
* Else, if the local test bed (hack/testbed, state in ``$TESTBED_STATE``, default /tmp/mousflow-cluster)
  is already up, it is used and left running.
* Else the local test bed is brought up with ``hack/testbed/cluster-up.sh`` (binaries and images are
  built or taken from ~/.cache/mousflow) and brought down at the end of the session, unless
  ``KEEP_CLUSTER=1``.

If the cluster cannot be brought up the fixture fails with the reason and the log tail; it never skips.
Every test in this directory is marked ``cluster`` so ``pytest -m "not cluster"`` runs without a cluster.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from harness import OperatorProcess, create_mous_namespace, make_bucket, operator_env, simulate_into

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TESTBED = REPO / "hack" / "testbed"
STATE = Path(os.environ.get("TESTBED_STATE", "/tmp/mousflow-cluster"))
CACHE = Path(os.environ.get("MOUSFLOW_CACHE", Path.home() / ".cache" / "mousflow"))
LOCAL_KUBECONFIG = STATE / "kubeconfig"


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (TESTBED / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


VERSIONS = _versions()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs a real Kubernetes cluster (tests/cluster)")
    config.addinivalue_line("markers", "exclusive: restarts the test bed's components, fills its node or times its "
                                       "control plane; the cluster tier runs it alone, before the other modules run "
                                       "in two lanes side by side (hack/testbed/cluster-tests.sh)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def find_kubectl() -> str:
    cached = CACHE / "bin" / f"kubernetes-{VERSIONS['KUBE_VERSION']}" / "kubectl"
    if cached.is_file():
        return str(cached)
    found = shutil.which("kubectl")
    if found:
        return found
    subprocess.run([str(TESTBED / "build-binaries.sh"), "kubernetes"], check=True)
    return str(cached)


def find_helm() -> str:
    cached = CACHE / "bin" / f"helm-{VERSIONS['HELM_VERSION']}" / "helm"
    if cached.is_file():
        return str(cached)
    found = shutil.which("helm")
    if found:
        return found
    subprocess.run([str(TESTBED / "build-binaries.sh"), "helm"], check=True)
    return str(cached)


@dataclass
class Cluster:
    """A reachable cluster and a few helpers around kubectl."""

    kubeconfig: str
    kubectl_bin: str
    started_here: bool
    s3: dict[str, str] = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def helm(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [find_helm(), "--kubeconfig", self.kubeconfig, *args], capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, manifest: dict | list, namespace: str | None = None) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        self.kubectl("apply", *(["-n", namespace] if namespace else []), "-f", "-", input=body)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", kind, name, *ns, "-o", "json"))

    def wait_until(self, what: str, predicate, timeout: float = 120, interval: float = 1.0):
        """Poll ``predicate()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (AssertionError, KeyError, IndexError, json.JSONDecodeError) as exc:
                last_error = exc
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}"
            + (f" (last error: {last_error})" if last_error else "")
        )


def _reachable(kubeconfig: str, kubectl: str) -> bool:
    try:
        proc = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "ok" in proc.stdout


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _read_s3_env() -> dict[str, str]:
    env_file = STATE / "s3.env"
    out: dict[str, str] = {}
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


def _refresh_runner_image() -> None:
    """On the running local test bed: rebuild the runner image if the source changed, and import it."""
    if os.environ.get("TESTBED_RUNNER", "1") != "1" or os.geteuid() != 0:
        return
    log = CACHE / "images-runner.log"
    with log.open("w") as fh:
        proc = subprocess.run([str(TESTBED / "images.sh"), "runner", "import"], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"building/importing the runner image failed; last lines of {log}:\n{_log_tail(log)}", pytrace=False
        )


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubectl = find_kubectl()
    env_kc = os.environ.get("KUBECONFIG", "")
    if env_kc and Path(env_kc.split(os.pathsep)[0]).is_file() and _reachable(env_kc, kubectl):
        if Path(env_kc) == LOCAL_KUBECONFIG:
            _refresh_runner_image()
        yield Cluster(
            env_kc, kubectl, started_here=False, s3=_read_s3_env() if Path(env_kc) == LOCAL_KUBECONFIG else {}
        )
        return
    if LOCAL_KUBECONFIG.is_file() and _reachable(str(LOCAL_KUBECONFIG), kubectl):
        _refresh_runner_image()
        yield Cluster(str(LOCAL_KUBECONFIG), kubectl, started_here=False, s3=_read_s3_env())
        return

    if os.geteuid() != 0:
        pytest.fail("no reachable cluster (KUBECONFIG unset or unreachable) and the local test bed needs root to start")
    up_log = CACHE / "cluster-up.log"
    up_log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with up_log.open("w") as fh:
        proc = subprocess.run([str(TESTBED / "cluster-up.sh")], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"hack/testbed/cluster-up.sh failed (exit {proc.returncode}); last lines of {up_log}:\n{_log_tail(up_log)}",
            pytrace=False,
        )
    print(f"\nlocal test bed up in {time.monotonic() - t0:.0f}s; kubeconfig {LOCAL_KUBECONFIG}")
    try:
        yield Cluster(str(LOCAL_KUBECONFIG), kubectl, started_here=True, s3=_read_s3_env())
    finally:
        if os.environ.get("KEEP_CLUSTER") != "1":
            subprocess.run([str(TESTBED / "cluster-down.sh")], check=False)


@pytest.fixture(scope="session")
def namespace(cluster: Cluster) -> str:
    """A fresh namespace for this test session, deleted at the end."""
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # Pods cannot be created before the namespace's default service account exists.
    cluster.wait_until(
        "the default service account",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).strip(),
        timeout=60,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def runner_image() -> str:
    """The project's runner image (containers/runner/Dockerfile), built and imported locally."""
    return os.environ.get("MOUSFLOW_RUNNER_IMAGE", VERSIONS["RUNNER_IMAGE"])


@pytest.fixture(scope="session")
def test_image() -> str:
    """An image built locally (never pulled): the debootstrap Python base unless MOUSFLOW_TEST_IMAGE says otherwise."""
    return os.environ.get("MOUSFLOW_TEST_IMAGE", VERSIONS["BASE_IMAGE"])


# ----------------------------------------------------------------------------------------------------- S3
@pytest.fixture(scope="session", name="presign_s3_url")
def presign_s3_url_fixture():
    """The SigV4 presigning function below, for tests."""
    return presign_s3_url


def presign_s3_url(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    expires: int = 600,
    now: _dt.datetime | None = None,
) -> str:
    """AWS Signature V4 query-string ("presigned") URL for ``method`` on ``url`` (path-style bucket/key).

    The host in ``url`` is part of the signature, so a URL signed for a Service name only works when
    the request really goes to that name.
    """
    parts = urlsplit(url)
    now = now or _dt.datetime.now(_dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
    canonical_path = quote(parts.path or "/", safe="/-_.~")
    canonical_request = "\n".join(
        [method, canonical_path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])

    def _hmac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{canonical_path}?{canonical_query}&X-Amz-Signature={signature}"


# ------------------------------------------------------------------------------- MinIO, MOUS data, operator
@pytest.fixture(scope="session")
def s3_env(cluster: Cluster) -> dict[str, str]:
    """How host processes reach the test bed's MinIO (the variables mousflow's storage layer reads)."""
    s3 = cluster.s3
    if not s3.get("S3_ENDPOINT_URL"):
        pytest.fail("the test bed did not publish its S3 endpoint (s3.env)")
    return {"MOUSFLOW_S3_ENDPOINT": s3["S3_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": s3.get("AWS_DEFAULT_REGION", "us-east-1")}


@pytest.fixture(scope="session")
def tiny_s3_mous(s3_env) -> str:
    """A tiny MOUS simulated once per session straight into a fresh bucket of the test bed's MinIO; tests
    give their runs outputs of their own under it."""
    return simulate_into(s3_env, "tiny", f"s3://{make_bucket(s3_env, 'mousflow-tiny')}/tiny", timeout=600)


@pytest.fixture(scope="session")
def prefect_api_url():
    """A real Prefect server for the whole session (operators come and go; their flow runs stay recorded)."""
    from mousflow.pipeline.local_server import local_prefect_server

    with local_prefect_server() as url:
        yield url


@pytest.fixture
def host_s3(monkeypatch, s3_env):
    """This test's process reads and writes MinIO too (manifests, products, checkpoints)."""
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def mous_namespace(request, cluster: Cluster, s3_env):
    """A namespace of the module's own (prefix: the module's NAMESPACE_PREFIX), ready for MOUSs."""
    name = create_mous_namespace(cluster, s3_env, getattr(request.module, "NAMESPACE_PREFIX", "mous"))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator_overrides() -> dict[str, str]:
    """Operator settings a module computes from its own fixtures (a storage policy, a history location); a
    module overrides this fixture. Constant ones go in the module's OPERATOR_ENV."""
    return {}


@pytest.fixture(scope="module")
def operator(request, cluster: Cluster, mous_namespace, s3_env, runner_image, prefect_api_url, tmp_path_factory,
             operator_overrides):
    """The operator as a local process watching the module's namespace, with the session's Prefect server;
    settings overridden by the module's OPERATOR_ENV, then by its operator_overrides."""
    env = operator_env(cluster, s3_env, prefect_api_url, mous_namespace, runner_image,
                       **getattr(request.module, "OPERATOR_ENV", {}), **operator_overrides)
    op = OperatorProcess(cluster, env, tmp_path_factory.mktemp("operator") / "operator.log").start()
    try:
        yield op
    finally:
        if op.proc is None or op.proc.poll() is not None:
            op.start()
        # while the operator still runs, so it removes its finalizers (the namespace can then go)
        cluster.kubectl("delete", "mous", "--all", "-n", mous_namespace, "--timeout=90s", check=False)
        op.stop()
