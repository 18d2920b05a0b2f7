"""Growing a running stage pod in place: the stage's published working set, the decision, the resize call and
its record, and the out-of-memory retry as the fallback when the cluster refuses (the launcher against a
scripted cluster; tests/cluster/test_stage_jobs.py does it on the test bed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from test_kubernetes_jobs import MANIFEST, SETTINGS, _Obj

from mousflow.pipeline.kubernetes import RESIZED, KubernetesJobLauncher, resize_target, retries_location
from mousflow.pipeline.resources import ResourceRequest
from mousflow.stages.memory_watch import MemoryPublisher, container_memory, memory_location
from mousflow.stages.runner import status_location
from mousflow.storage.location import Location

MiB = 2**20
GiB = 2**30


def test_the_limit_is_raised_by_the_oom_factor_once_the_working_set_nears_it():
    assert resize_target(700 * MiB, GiB, 0.8, 1.5, 64 * GiB) is None
    assert resize_target(820 * MiB, GiB, 0.8, 1.5, 64 * GiB) == int(1.5 * GiB)
    assert resize_target(int(7.9 * GiB), 8 * GiB, 0.8, 1.5, 10 * GiB) == 10 * GiB  # up to the cap
    assert resize_target(10 * GiB, 10 * GiB, 0.8, 1.5, 10 * GiB) is None  # at the cap: the OOM path decides
    assert resize_target(5 * GiB, None, 0.8, 1.5, 64 * GiB) is None  # no limit


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_working_set_is_usage_less_inactive_page_cache(tmp_path, monkeypatch, version):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    if version == "v2":
        (tmp_path / "memory.current").write_text("600000000\n")
        (tmp_path / "memory.max").write_text("1073741824\n")
        (tmp_path / "memory.stat").write_text("anon 500000000\ninactive_file 100000000\nactive_file 5\n")
    else:
        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text("600000000\n")
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
        (tmp_path / "memory" / "memory.stat").write_text("cache 200000000\ntotal_inactive_file 100000000\n")
    assert container_memory(tmp_path) == (500_000_000, 1_073_741_824)
    unlimited = "max" if version == "v2" else str(2**63 - 4096)
    (tmp_path / ("memory.max" if version == "v2" else "memory/memory.limit_in_bytes")).write_text(unlimited)
    assert container_memory(tmp_path) == (500_000_000, None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert container_memory(tmp_path) is None  # not in a pod: the cgroup is not the stage's own


def test_the_stage_publishes_its_memory_while_it_runs(tmp_path):
    loc = Location.of(tmp_path / "status" / "imaging.memory.json")
    with MemoryPublisher(loc, interval=0.05, read=lambda: (123, 456)):
        time.sleep(0.3)
    doc = loc.read_json()
    assert (doc["workingSetBytes"], doc["limitBytes"]) == (123, 456) and time.time() - doc["time"] < 5
    quiet = Location.of(tmp_path / "none.json")
    with MemoryPublisher(quiet, interval=0.05, read=lambda: None):  # outside a pod: nothing at all
        time.sleep(0.1)
    assert not quiet.exists()


class GrowingCluster:
    """One stage Job that runs for `polls` looks, its pod's working set at `fraction` of its first limit (the
    cgroup's limit is what a resize raises), then succeeds; `refuse` makes the resize call fail as a cluster
    without in-place resize would."""

    def __init__(self, run_root: Location, limit: int, fraction: float, polls: int = 6, refuse: bool = False):
        self.run_root, self.limit, self.polls, self.refuse = run_root, limit, polls, refuse
        self.working_set = int(fraction * limit)
        self.resizes: list[tuple[str, list]] = []
        self.job = None

    def create_namespaced_job(self, ns, spec):
        self.job = spec["metadata"]["name"]

    def read_namespaced_job_status(self, name, ns):
        self.polls -= 1
        if self.polls > 0:
            memory_location(self.run_root, "imaging").write_json(
                {"workingSetBytes": self.working_set, "limitBytes": self.limit, "time": time.time()})
            return _Obj({"metadata": {"name": name}, "status": {"active": 1}})
        status_location(self.run_root, "imaging").write_json(
            {"stage": "imaging", "state": "Succeeded", "reason": "", "message": "", "metrics": {}})
        return _Obj({"metadata": {"name": name}, "status": {"succeeded": 1}})

    def list_namespaced_pod(self, ns, label_selector):
        pod = {"metadata": {"name": f"{self.job}-abcde", "creation_timestamp": "2026-12-03T10:00:00Z",
                            "deletion_timestamp": None},
               "status": {"phase": "Running" if self.polls > 0 else "Succeeded",
                          "container_statuses": [{"state": {"terminated": {"reason": "Completed", "exit_code": 0}},
                                                  "last_state": {}}]}}
        return _Obj({"items": [pod]})

    def patch_namespaced_pod_resize(self, name, ns, body):
        from kubernetes.client.rest import ApiException

        self.resizes.append((name, body))
        if self.refuse:
            raise ApiException(status=404, reason="Not Found")
        self.limit = int(body[0]["value"].removesuffix("Mi")) * MiB  # the kubelet applies it to the cgroup

    def read_namespaced_pod_log(self, name, ns):
        return ""


def _launch(tmp_path: Path, cluster_of, **kw):
    doc = yaml.safe_load(MANIFEST.read_text())
    run_root = Location.of(str(tmp_path / "out"))
    doc["spec"]["output"]["uri"] = run_root.uri
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "mous.yaml").write_text(yaml.safe_dump(doc))
    cluster = cluster_of(run_root)
    request = ResourceRequest(cpu=1.0, memory_bytes=800 * MiB, memory_limit_bytes=GiB)
    launcher = KubernetesJobLauncher(SETTINGS, lambda s: request, poll_seconds=0, batch_api=cluster,
                                     core_api=cluster, **kw)
    lines: list[str] = []
    outcome = launcher.launch("imaging", str(tmp_path / "mous.yaml"), run_root, lines.append)
    return outcome, cluster, run_root, lines


def test_a_stage_nearing_its_limit_is_resized_in_place_and_goes_on(tmp_path):
    outcome, cluster, run_root, lines = _launch(tmp_path, lambda r: GrowingCluster(r, GiB, 0.85))
    assert outcome.state == "Succeeded"
    # 0.85 of 1 GiB -> 1.5 GiB, once: the same working set is then 0.57 of the limit
    assert [b[0]["value"] for _, b in cluster.resizes] == ["1536Mi"]
    assert cluster.resizes[0][1][0]["path"] == "/spec/containers/0/resources/limits/memory"
    record = retries_location(run_root, "imaging").read_json()
    assert [(r["reason"], r["memoryLimit"]) for r in record] == [(RESIZED, "1024Mi")]
    assert record[0]["message"].startswith("working set 870Mi of 1024Mi: memory limit raised in place to 1536Mi")
    assert outcome.metrics["memory_limit_bytes"] == 1536 * MiB
    assert any("raised in place" in line for line in lines)


def test_a_stage_still_growing_is_raised_again_once_the_last_raise_is_in_the_cgroup(tmp_path):
    class StillGrowing(GrowingCluster):
        def patch_namespaced_pod_resize(self, name, ns, body):
            super().patch_namespaced_pod_resize(name, ns, body)
            self.working_set = int(0.9 * self.limit)

    _, cluster, _, _ = _launch(tmp_path, lambda r: StillGrowing(r, GiB, 0.85, polls=4), memory_cap_bytes=3 * GiB)
    assert [b[0]["value"] for _, b in cluster.resizes] == ["1536Mi", "2304Mi", "3072Mi"]  # the last: the cap


def test_a_refused_resize_is_asked_once_and_the_oom_retry_stays_the_fallback(tmp_path):
    outcome, cluster, run_root, lines = _launch(tmp_path, lambda r: GrowingCluster(r, GiB, 0.9, refuse=True))
    assert outcome.state == "Succeeded" and len(cluster.resizes) == 1
    assert next(line for line in lines if "refused to resize" in line).endswith(
        "an out-of-memory kill will run it again with more memory instead")
    assert not retries_location(run_root, "imaging").exists()


def test_nothing_is_resized_below_the_threshold_or_when_turned_off(tmp_path):
    _, cluster, _, _ = _launch(tmp_path / "a", lambda r: GrowingCluster(r, GiB, 0.5))
    assert cluster.resizes == []
    _, cluster, _, _ = _launch(tmp_path / "b", lambda r: GrowingCluster(r, GiB, 0.95), resize_in_place=False)
    assert cluster.resizes == []
