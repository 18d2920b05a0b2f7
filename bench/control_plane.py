"""The operator's control plane at scale: N MOUSs applied at once to the test bed, the operator as a local process.

What it does: simulates one tiny MOUS into the test bed's MinIO (or reuses --input) and applies N MOUSs that
share its execution block (each with a uid, an output location and a deadline of its own, deadlines shuffled)
in one go to a namespace of its own, with the operator (`python -m mousflow_operator`, wrapped in a request
counter) watching that namespace only and a local Prefect server. The admitted MOUSs really run (their stage
Jobs on the test bed). Then:

  queued      time from the start of the apply until every MOUS has been checked (none left FullyObserved)
              and the MOUSs in Processing are the earliest deadlines (target: 60 s for 1,000)
  rss         the operator's resident memory, largest sample (target: 300 MB)
  connections the operator's established connections to the API server, largest sample (bounded by the
              operator's pool: a watch stream per watched resource, operator.apiConnections for requests)
  requests    the operator's HTTP requests per MOUS per minute, by destination (Kubernetes API, S3, Prefect),
              in the burst (apply -> queued) and in a steady window after it; counted in the operator process
              around urllib3 (kubernetes client), aiohttp (kopf, s3fs/aiobotocore) and httpx (Prefect client)
  restart     the operator is killed (SIGKILL, --restart-signal TERM for a normal stop) half way and started
              again: the phases of every MOUS must be as before (or later, for the running ones), the queue
              must still be in deadline order
  duplicates  flow runs (Prefect) with the same name, and stage Jobs for the same MOUS and stage (must be 0)

Prints one line per figure and a final JSON line (also written with --json FILE).

Usage: python bench/control_plane.py [--n 1000] [--window 120] [--max-processing 2] [--keep]
       [--flow-runner pod|thread] [--trace-memory]
Needs the test bed (`make cluster-up`; KUBECONFIG defaults to /tmp/mousflow-cluster/kubeconfig).
The namespace it creates is deleted at the end (after the operator, stopped normally, released its finalizers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("TESTBED_STATE", "/tmp/mousflow-cluster"))
BASE = datetime(2026, 9, 1, tzinfo=UTC)


# ------------------------------------------------------------------ the operator, wrapped in request counters
def _port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _api_server_port() -> int:
    """The port of the API server KUBECONFIG names (its first cluster)."""
    import yaml

    return _port_of(yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())["clusters"][0]["cluster"]["server"])


def _install_counters(out_path: str) -> None:
    """Count every HTTP request this process makes, by destination port, and dump the counts to out_path every
    second (and at exit). The destinations are named from the environment: the API server's port from the
    kubeconfig, S3's from MOUSFLOW_S3_ENDPOINT, Prefect's from PREFECT_API_URL."""
    import atexit


    ports = {}
    if os.environ.get("KUBECONFIG"):
        ports[_api_server_port()] = "api"
    for name, url in (("s3", os.environ.get("MOUSFLOW_S3_ENDPOINT", "")),
                      ("prefect", os.environ.get("PREFECT_API_URL", ""))):
        if url:
            ports[_port_of(url)] = name
    counts: Counter = Counter()
    lock = threading.Lock()
    flow_module = os.path.join("mousflow", "pipeline", "flow.py")

    handed = threading.local()

    def caller() -> str:
        """"flow" for a request made by a flow run: its thread is named "flow-...", work it handed to a thread pool
        (Dask's threaded scheduler reading Zarr chunks, say) carries the submitter's attribution, and work the
        flow's engine runs in a thread of its own has the flow module's task on its stack; else "control"."""
        name = threading.current_thread().name
        if name.startswith("flow-"):
            return "flow"
        if name == "mous-waker":  # the wakes (mousflow_operator.wake): one PATCH per fact that arrived elsewhere
            return "wake"
        if getattr(handed, "who", None):
            return handed.who
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.endswith(flow_module):
                return "flow"
            frame = frame.f_back
        return "control"

    def count(port, method: str, url: str = "") -> None:
        dest = ports.get(int(port or 0), "other")
        with lock:
            counts[f"{dest}:{method.upper()}"] += 1
            if dest == "api":  # who asked, as for S3 below: a flow run's thread (its launcher following its Jobs)
                who = caller()
                counts[f"apicall:{method.upper()}:{who}"] += 1
                counts[f"apipath:{method.upper()} {_resource_of(url)}:{who}"] += 1

    import concurrent.futures

    orig_submit = concurrent.futures.ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):
        who = caller()

        def attributed_run(*a, **k):
            before, handed.who = getattr(handed, "who", None), who
            try:
                return fn(*a, **k)
            finally:
                handed.who = before
        return orig_submit(self, attributed_run, *args, **kwargs)

    concurrent.futures.ThreadPoolExecutor.submit = submit

    import urllib3.connectionpool

    orig_urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(self, method, url, *a, **k):
        count(self.port, method, url)
        return orig_urlopen(self, method, url, *a, **k)

    urllib3.connectionpool.HTTPConnectionPool.urlopen = urlopen

    import aiohttp

    orig_request = aiohttp.ClientSession._request

    async def _request(self, method, str_or_url, *a, **k):
        try:
            port = urlsplit(str(str_or_url)).port
            if port is None:
                port = 443 if str(str_or_url).startswith("https") else 80
        except ValueError:
            port = 0
        count(port, method, str(str_or_url))
        return await orig_request(self, method, str_or_url, *a, **k)

    aiohttp.ClientSession._request = _request

    import httpx

    orig_send, orig_asend = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, *a, **k):
        count(request.url.port or 80, request.method, str(request.url))
        return orig_send(self, request, *a, **k)

    async def asend(self, request, *a, **k):
        count(request.url.port or 80, request.method, str(request.url))
        return await orig_asend(self, request, *a, **k)

    httpx.Client.send, httpx.AsyncClient.send = send, asend

    # Who asked: S3 requests are sent from fsspec's (or zarr's) event-loop thread, so they are attributed where
    # the caller enters it (fsspec.asyn.sync, zarr.core.sync.sync), by the caller's thread: a flow run's thread
    # ("flow-...", the admitted MOUSs' processing: manifests, checkpoint tests, sizing) or the control plane.
    import fsspec.asyn
    import zarr.core.sync

    def attributed(orig, name):
        def wrapper(*a, **k):
            who = caller()
            with lock:
                counts[f"s3call:{name}:{who}"] += 1
                if who == "control" and os.environ.get("BENCH_TRACE_CONTROL_S3"):
                    import traceback
                    where = " < ".join(f"{os.path.basename(f.filename)}:{f.name}" for f in
                                       traceback.extract_stack(limit=14)[-14:-1][::-1]
                                       if "mousflow" in f.filename or "kopf" in f.filename)
                    counts[f"s3trace:{threading.current_thread().name[:12]} {where}"] += 1
            return orig(*a, **k)
        return wrapper

    fsspec.asyn.sync = attributed(fsspec.asyn.sync, "fsspec")
    import zarr.abc.store
    import zarr.api.synchronous
    import zarr.core.array
    import zarr.core.group
    import zarr.core.sync_group

    zsync = attributed(zarr.core.sync.sync, "zarr")
    for module in (zarr.core.sync, zarr.api.synchronous, zarr.core.array, zarr.core.group, zarr.core.sync_group,
                   zarr.abc.store):
        if getattr(module, "sync", None) is not None:
            module.sync = zsync

    def dump() -> None:
        with lock:
            doc = dict(counts)
        tmp = out_path + ".tmp"
        Path(tmp).write_text(json.dumps(doc))
        os.replace(tmp, out_path)

    def loop() -> None:
        while True:
            time.sleep(1.0)
            dump()

    threading.Thread(target=loop, daemon=True, name="request-counter").start()
    atexit.register(dump)


def _trace_memory(out_path: str, every: float = 10.0) -> None:
    """--trace-memory: where the operator's Python memory is held. Every `every` s, the 25 largest allocation
    sites (4 frames each) of what is still allocated, into out_path (tracemalloc: Python and numpy allocations,
    not the allocator's fragmentation, which is the rest of the resident memory)."""
    import tracemalloc

    tracemalloc.start(4)

    def loop() -> None:
        while True:
            time.sleep(every)
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            total = sum(stat.size for stat in snap.statistics("filename"))
            lines = [f"{time.strftime('%H:%M:%S')} traced {total / 2**20:.1f} MB"]
            for stat in snap.statistics("traceback")[:25]:
                lines.append(f"{stat.size / 2**20:8.1f} MB in {stat.count} blocks")
                lines += [f"      {line.strip()}" for line in stat.traceback.format() if line.strip()]
            Path(out_path + ".tmp").write_text("\n".join(lines) + "\n")
            os.replace(out_path + ".tmp", out_path)

    threading.Thread(target=loop, daemon=True, name="memory-tracer").start()


def run_counted_operator() -> int:
    _install_counters(os.environ["BENCH_COUNTS"])
    if os.environ.get("BENCH_TRACE_MEMORY"):
        _trace_memory(os.environ["BENCH_TRACE_MEMORY"])
    from mousflow_operator.__main__ import main

    return main([])


# ------------------------------------------------------------------------------------------------ the bench
def _s3_env() -> dict[str, str]:
    doc = {}
    for line in (STATE / "s3.env").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            doc[k] = v
    return {"MOUSFLOW_S3_ENDPOINT": doc["S3_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": doc["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": doc["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": doc.get("AWS_DEFAULT_REGION", "us-east-1"),
            "_IN_CLUSTER": doc["S3_ENDPOINT_URL_IN_CLUSTER"]}


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to remote `port`: its socket inodes (/proc/PID/fd) looked
    up in the kernel's connection tables (/proc/PID/net/tcp and tcp6)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    n = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()  # sl local rem st ... inode (10th)
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                n += 1
    return n


def _resource_of(url: str) -> str:
    """The kind of an API request's object, without names: /apis/mousflow.io/v1alpha1/namespaces/x/mouses/y/status
    -> mouses/status; ?watch=true marks a watch."""
    split = urlsplit(url)
    query = split.query
    parts = [p for p in split.path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    kind = parts[0] if parts else "?"
    sub = parts[2] if len(parts) > 2 else ""
    return f"{kind}/{sub}" if sub else kind + (" (watch)" if "watch=" in query else "")


def _counts(path: Path) -> Counter:
    try:
        return Counter(json.loads(path.read_text()))
    except (OSError, ValueError):
        return Counter()


def _by_destination(counts: Counter) -> dict[str, int]:
    """HTTP requests by destination (api, s3, prefect), and API requests and S3 calls by caller (api_control,
    s3_calls_control: the control plane; api_flow, s3_calls_flow: the admitted MOUSs' flow runs, whose launchers
    follow their Jobs)."""
    out: Counter = Counter()
    for k, v in counts.items():
        parts = k.split(":")
        if parts[0] == "apipath":
            continue  # by endpoint: _top_endpoints
        key = {"s3call": f"s3_calls_{parts[-1]}", "apicall": f"api_{parts[-1]}"}.get(parts[0], parts[0])
        out[key] += v
    return dict(out)


class Operator:
    def __init__(self, env: dict[str, str], log: Path, counts_dir: Path):
        self.env, self.log, self.counts_dir = env, log, counts_dir
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.rss_max = 0
        self.api_port = 0  # the API server's port, once known: its connections are sampled with the memory
        self.api_connections_max = 0
        self.carried: Counter = Counter()  # counts of the operator processes before the current one

    def start(self) -> None:
        self.generation += 1
        # MALLOC_ARENA_MAX as the chart's operator Deployment sets it: the figures are those of what is installed
        env = {"MALLOC_ARENA_MAX": "2", **self.env, "BENCH_COUNTS": str(self.counts_path)}
        with open(self.log, "a") as fh:
            fh.write(f"\n===== operator start {time.strftime('%H:%M:%S')}\n")
            fh.flush()
            self.proc = subprocess.Popen([sys.executable, __file__, "--run-operator"], env=env, stdout=fh,
                                         stderr=subprocess.STDOUT)

    @property
    def counts_path(self) -> Path:
        return self.counts_dir / f"counts-{self.generation}.json"

    def counts(self) -> Counter:
        return self.carried + _counts(self.counts_path)

    def sample(self) -> int:
        rss = _rss_bytes(self.proc.pid) if self.proc and self.proc.poll() is None else 0
        self.rss_max = max(self.rss_max, rss)
        if rss and self.api_port:
            self.api_connections_max = max(self.api_connections_max, _connections_to(self.proc.pid, self.api_port))
        return rss

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(1.5)
        self.carried = self.counts()


def _versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "hack" / "testbed" / "versions.env").read_text().splitlines():
        if "=" in line and not line.strip().startswith("#"):
            k, v = line.strip().split("=", 1)
            out[k] = v
    return out


def _find_tool(name: str, build: str) -> str:
    """The test bed's build of `name` (in the cache directory `build`, e.g. kubernetes-v1.34.4), else PATH's."""
    import shutil

    cache = Path(os.environ.get("MOUSFLOW_CACHE", Path.home() / ".cache" / "mousflow"))
    cached = cache / "bin" / build / name
    found = str(cached) if cached.is_file() else shutil.which(name)
    if not found:
        raise SystemExit(f"control_plane: no {name} (make cluster-up builds one)")
    return found


class _Kubectl:
    """What harness.create_mous_namespace needs of a cluster: kubectl and waiting."""

    def __init__(self, kubeconfig: str, kubectl: str):
        self.kubeconfig, self.kubectl_bin = kubeconfig, kubectl

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc.stdout

    def wait_until(self, what: str, predicate, timeout: float = 120, interval: float = 1.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise RuntimeError(f"timed out waiting for {what}")


def wait_watching(op: Operator, timeout: float = 300) -> None:
    """Until the operator has listed the namespace (its first GET to the API server: kopf's watch begins with a
    list) and a moment more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(k.startswith("api:GET") for k in _counts(op.counts_path)):
            time.sleep(2)
            return
        if op.proc is not None and op.proc.poll() is not None:
            raise SystemExit(f"the operator exited ({op.proc.returncode}); see {op.log}")
        time.sleep(0.5)
    raise SystemExit(f"the operator did not start watching within {timeout:.0f} s; see {op.log}")


def _mous_docs(base: dict, n: int, sim: str, ns_tag: str, seed: int) -> list[dict]:
    days = list(range(n))
    random.Random(seed).shuffle(days)
    docs = []
    for i, day in enumerate(days):
        doc = json.loads(json.dumps(base))
        name = f"cp-{i:04d}"
        doc["metadata"] = {"name": name}
        doc["spec"]["uid"] = f"uid://A001/X{ns_tag}/X{i:x}"
        # deadlines a few minutes apart, all in the same month: a pure EDF order, no ties
        doc["spec"]["fullyObservedAt"] = (BASE + timedelta(minutes=7 * day)).strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["spec"]["output"]["uri"] = f"{sim}/cp-{ns_tag}/{name}"
        doc["spec"]["delivery"] = {"uri": f"{sim}/cp-{ns_tag}-delivered/{name}", "automatic": False}
        docs.append(doc)
    return docs


def _create_all(api, ns: str, docs: list[dict], threads: int = 16) -> None:
    """All the MOUSs at once: created by 16 concurrent clients (kubectl creates a list one object after the
    other, 121 s for 1,000 on the test bed)."""
    from concurrent.futures import ThreadPoolExecutor

    from mousflow.model import GROUP, PLURAL, VERSION

    def create(doc: dict) -> None:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, docs))


def _list_mous(api, ns: str) -> list[dict]:
    from mousflow.model import GROUP, PLURAL, VERSION

    return api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]


def _phases(items: list[dict]) -> dict[str, str]:
    return {m["metadata"]["name"]: (m.get("status") or {}).get("phase", "") for m in items}


WAITING = ("", "FullyObserved")
ADMITTED = ("Processing", "ReadyForReview", "Reviewing", "DeliveryInProgress", "Delivered", "QA2Fail", "Failed")


def queue_state(phases: dict[str, str], edf: list[str], slots: int) -> tuple[bool, bool, list[str]]:
    """(all checked, admitted in deadline order, the admitted ones): checked = none left unphased or
    FullyObserved; in order = the admitted MOUSs are exactly the first of the deadline order, and as many as
    the slots (or all of them)."""
    checked = all(p not in WAITING for p in phases.values())
    admitted = [n for n in edf if phases.get(n) in ADMITTED]
    in_order = set(admitted) == set(edf[:len(admitted)]) and len(admitted) >= min(slots, len(edf))
    return checked, in_order, admitted


def _job_transitions(batch, ns: str, since: datetime) -> int:
    """Stage Jobs created, and Jobs finished, since `since`: the work whose facts wake MOUSs."""
    count = 0
    for job in batch.list_namespaced_job(ns).items:
        stamps = [job.metadata.creation_timestamp, job.status.completion_time]
        stamps += [c.last_transition_time for c in job.status.conditions or [] if c.type == "Failed"]
        count += sum(1 for s in stamps if s is not None and s >= since)
    return count


def _duplicates(batch, ns: str, prefect_url: str) -> dict[str, int]:
    jobs = batch.list_namespaced_job(ns).items
    per_stage = Counter((j.metadata.labels.get("mousflow.io/mous"), j.metadata.labels.get("mousflow.io/stage"))
                        for j in jobs if "mousflow.io/stage" in (j.metadata.labels or {}))
    # flow-run Jobs (--flow-runner pod): one per run of a MOUS
    per_stage.update((j.metadata.labels["mousflow.io/flow-run"], (j.metadata.annotations or {}).get(
        "mousflow.io/run-key")) for j in jobs if "mousflow.io/flow-run" in (j.metadata.labels or {}))
    import httpx

    names: Counter = Counter()
    offset = 0
    while True:
        page = httpx.post(f"{prefect_url}/flow_runs/filter", json={"offset": offset, "limit": 200},
                          timeout=30).json()
        names.update(r["name"] for r in page)
        if len(page) < 200:
            break
        offset += 200
    return {"jobs": len(jobs), "duplicate_jobs": sum(c - 1 for c in per_stage.values() if c > 1),
            "flow_runs": sum(names.values()), "duplicate_flow_runs": sum(c - 1 for c in names.values() if c > 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--window", type=float, default=120.0, help="seconds of each steady-state measurement window")
    p.add_argument("--max-processing", type=int, default=2)
    p.add_argument("--queued-timeout", type=float, default=900.0)
    p.add_argument("--restart-signal", choices=("KILL", "TERM"), default="KILL")
    p.add_argument("--input", help="an existing tiny MOUS in the test bed's S3 (s3://.../tiny); default: simulate")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the namespace (and the operator log) afterwards")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--trace-memory", action="store_true",
                   help="trace the operator's allocations (tracemalloc; slower): the largest sites, printed when all "
                        "are queued and kept in the work directory as memory-trace.txt")
    p.add_argument("--flow-runner", choices=("pod", "thread"), default="pod",
                   help="where the admitted MOUSs' flows run: pods of their own (the chart's default) or threads "
                        "of the operator")
    a = p.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    os.environ.setdefault("KUBECONFIG", str(STATE / "kubeconfig"))
    s3 = _s3_env()
    in_cluster = s3.pop("_IN_CLUSTER")
    os.environ.update(s3)
    import yaml
    from harness import create_mous_namespace, make_bucket
    from kubernetes import client, config

    from mousflow.pipeline.local_server import local_prefect_server
    from mousflow.storage.location import Location

    versions = _versions()
    cluster = _Kubectl(os.environ["KUBECONFIG"], _find_tool("kubectl", f"kubernetes-{versions['KUBE_VERSION']}"))
    config.load_kube_config(os.environ["KUBECONFIG"])
    conf = client.Configuration.get_default_copy()
    conf.connection_pool_maxsize = 16  # the 16 clients of _create_all
    api_client = client.ApiClient(conf)
    custom, batch = client.CustomObjectsApi(api_client), client.BatchV1Api(api_client)
    workdir = Path(os.environ.get("BENCH_WORKDIR", f"/tmp/mousflow-bench-cp-{os.getpid()}"))
    workdir.mkdir(parents=True, exist_ok=True)
    fig: dict = {"n": a.n, "max_processing": a.max_processing, "window_s": a.window, "flow_runner": a.flow_runner}

    sim = a.input
    if sim is None:
        sim = f"s3://{make_bucket(s3, 'mousflow-cp')}/tiny"
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "mousflow.cli", "simulate", "--preset", "tiny", "--out", sim],
                       env={**os.environ}, check=True, capture_output=True, timeout=900)
        print(f"simulated the tiny input {sim} in {time.monotonic() - t:.0f} s", flush=True)
    base = yaml.safe_load(Location(f"{sim}/mous.yaml").read_text())
    ns = create_mous_namespace(cluster, s3, "cp")
    tag = ns.split("-")[-1]
    print(f"namespace {ns}, operator log {workdir / 'operator.log'}", flush=True)

    flow_env = {}
    if a.flow_runner == "pod":  # as the chart installs it: the flow-runner account and Role in the namespace
        helm = _find_tool("helm", f"helm-{versions['HELM_VERSION']}")
        objects = subprocess.run([helm, "template", "cp", str(REPO / "helm" / "mousflow"), "-n", ns,
                                  "--show-only", "templates/flow-runner.yaml"], check=True, capture_output=True,
                                 text=True).stdout
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=objects)
        flow_env = {"MOUSFLOW_FLOW_RUNNER_CPU": "100m", "MOUSFLOW_FLOW_RUNNER_MEMORY": "512Mi"}
    # flows in pods reach the Prefect server on the test bed's node address (the S3 endpoint's host)
    prefect_host = urlsplit(s3["MOUSFLOW_S3_ENDPOINT"]).hostname if a.flow_runner == "pod" else "127.0.0.1"
    with local_prefect_server(host=prefect_host) as prefect_url:
        env = {**os.environ, **flow_env, "MOUSFLOW_FLOW_RUNNER": a.flow_runner,
               "PREFECT_API_URL": prefect_url, "MOUSFLOW_NAMESPACES": ns,
               "MOUSFLOW_RUNNER_IMAGE": os.environ.get("MOUSFLOW_RUNNER_IMAGE", versions["RUNNER_IMAGE"]),
               "MOUSFLOW_IMAGE_PULL_POLICY": "Never", "MOUSFLOW_S3_SECRET": "mousflow-s3",
               "MOUSFLOW_S3_ENDPOINT_IN_CLUSTER": in_cluster, "MOUSFLOW_MAX_PROCESSING": str(a.max_processing),
               "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),  # as the chart runs it
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
                   [str(REPO / "flows"), str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])}
        env.pop("MOUSFLOW_HISTORY", None)
        if a.trace_memory:
            env["BENCH_TRACE_MEMORY"] = str(workdir / "memory-trace.txt")
        op = Operator(env, workdir / "operator.log", workdir)
        op.api_port = _api_server_port()
        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.wait(1.0):
                op.sample()

        threading.Thread(target=sampler, daemon=True).start()
        try:
            op.start()
            wait_watching(op)  # "with the operator running": its start-up (imports) is not the control plane's time
            fig["rss_idle_mb"] = round(op.sample() / 2**20, 1)
            docs = _mous_docs(base, a.n, sim, tag, a.seed)
            edf = [d["metadata"]["name"] for d in sorted(docs, key=lambda d: d["spec"]["fullyObservedAt"])]
            c0, t0 = op.counts(), time.monotonic()
            _create_all(custom, ns, docs)
            fig["apply_s"] = round(time.monotonic() - t0, 1)
            print(f"applied {a.n} MOUSs in {fig['apply_s']} s", flush=True)

            def wait_queued(what: str, timeout: float) -> float:
                start = time.monotonic()
                last = ""
                while time.monotonic() - start < timeout:
                    phases = _phases(_list_mous(custom, ns))
                    checked, in_order, _admitted = queue_state(phases, edf, a.max_processing)
                    if len(phases) == a.n and checked and in_order:
                        return time.monotonic() - start
                    line = f"{what}: {dict(Counter(phases.values()))}"
                    if line != last:
                        print(f"  {time.monotonic() - start:6.1f} s {line}", flush=True)
                        last = line
                    time.sleep(1.0)
                print(f"{what}: NOT all checked and queued in deadline order within {timeout:.0f} s "
                      f"({sum(p not in WAITING for p in phases.values())} of {a.n} checked); going on", flush=True)
                return None

            queued = wait_queued("after apply", a.queued_timeout)
            fig["queued_s"] = None if queued is None else round(queued + fig["apply_s"], 1)
            burst_s = time.monotonic() - t0
            fig["rss_queued_mb"] = round(op.sample() / 2**20, 1)
            if a.trace_memory:
                time.sleep(11)  # the tracer's next snapshot
                trace = workdir / "memory-trace.txt"
                print(trace.read_text() if trace.exists() else "no memory trace written", flush=True)
            burst = op.counts() - c0
            print(f"all {a.n} checked and queued in deadline order {fig['queued_s']} s after the apply began "
                  f"(None: not within --queued-timeout)", flush=True)

            def window(label: str) -> dict:
                c, t, started = op.counts(), time.monotonic(), datetime.now(UTC)
                time.sleep(a.window)
                d = _by_destination(op.counts() - c)
                minutes = (time.monotonic() - t) / 60
                rates = {k: round(v / a.n / minutes, 3) for k, v in d.items()}
                # the work done in the window, which the wakes follow (not the number of MOUSs waiting)
                rates["job_transitions"] = _job_transitions(batch, ns, started)
                rates["wakes_per_job_transition"] = round(d.get("api_wake", 0) / max(1, rates["job_transitions"]), 2)
                print(f"{label}: requests per MOUS per minute {rates} (totals {d})", flush=True)
                top = sorted(((v, k.split(":", 1)[1]) for k, v in (op.counts() - c).items()
                              if k.startswith("apipath:")), reverse=True)[:8]
                print(f"{label}: API requests by endpoint and caller: {[f'{k} {v}' for v, k in top]}", flush=True)
                return rates

            fig["burst_requests_per_mous"] = {k: round(v / a.n, 2) for k, v in _by_destination(burst).items()}
            fig["burst_s"] = round(burst_s, 1)
            fig["steady_per_mous_per_min"] = window("steady")
            before = _phases(_list_mous(custom, ns))

            # ---- restart half way
            sig = signal.SIGKILL if a.restart_signal == "KILL" else signal.SIGTERM
            print(f"restarting the operator ({a.restart_signal})", flush=True)
            op.stop(sig)
            t_restart = time.monotonic()
            c_restart = op.counts()
            op.start()
            requeued = wait_queued("after restart", a.queued_timeout)
            fig["requeued_after_restart_s"] = None if requeued is None else round(requeued, 1)
            after = _phases(_list_mous(custom, ns))
            # Work goes on across the restart: a running MOUS may finish meanwhile (its flow runs in a pod), and
            # the slot it frees goes to the next deadline. Such an admission is not the restart's doing when the
            # admitted ones are still the earliest deadlines and no more run than the slots allow.
            _, still_in_order, _ = queue_state(after, edf, a.max_processing)
            slots_kept = sum(1 for p in after.values() if p == "Processing") <= a.max_processing
            moved = {n: (before[n], after.get(n)) for n in before
                     if before[n] != after.get(n) and not (before[n] in ADMITTED and after.get(n) in ADMITTED)
                     and not (before[n] == "ReadyForProcessing" and after.get(n) in ADMITTED and still_in_order
                              and slots_kept)}
            fig["restart_phase_changes"] = len(moved)
            fig["restart_burst_requests_per_mous"] = {
                k: round(v / a.n, 2) for k, v in _by_destination(op.counts() - c_restart).items()}
            fig["restart_to_steady_s"] = round(time.monotonic() - t_restart, 1)
            fig["after_restart_per_mous_per_min"] = window("after restart")
            _, in_order, admitted = queue_state(after, edf, a.max_processing)
            fig["admitted_in_deadline_order"] = in_order
            fig["admitted"] = len(admitted)
            fig.update(_duplicates(batch, ns, prefect_url))
            fig["rss_max_mb"] = round(op.rss_max / 2**20, 1)
            fig["api_connections_max"] = op.api_connections_max
            if moved:
                print(f"phases changed by the restart: {dict(list(moved.items())[:10])}", flush=True)
        finally:
            stop_sampling.set()
            op.stop(signal.SIGTERM)  # a normal stop releases the finalizers, so the namespace can go
            if not a.keep:
                from mousflow_operator.finalizers import FINALIZER, release_finalizers

                try:  # what a stop that took too long (and was killed) left behind
                    release_finalizers((ns,), FINALIZER)
                finally:
                    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    print(f"operator resident memory: idle {fig.get('rss_idle_mb')} MB, when all were queued "
          f"{fig.get('rss_queued_mb')} MB, largest {fig.get('rss_max_mb')} MB; connections to the API server "
          f"at most {fig.get('api_connections_max')}")
    print(f"duplicates: {fig.get('duplicate_flow_runs')} flow runs (of {fig.get('flow_runs')}), "
          f"{fig.get('duplicate_jobs')} Jobs (of {fig.get('jobs')}); phases changed by the restart: "
          f"{fig.get('restart_phase_changes')}")
    print("RESULT " + json.dumps(fig), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=1))
    return fig


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run-operator"]:
        sys.exit(run_counted_operator())
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped bench still stops its operator and deletes its namespace
    main()
