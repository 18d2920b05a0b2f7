"""A pod's own peak memory from its cgroup, whichever cgroup version the node runs."""

from __future__ import annotations

from mousflow.stages.peak_memory import container_peak_memory_bytes


def _cgroup(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_memory_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    root = _cgroup(tmp_path, {"memory.peak": "734003200\n", "memory.current": "1024\n"})
    assert container_peak_memory_bytes(root) == 734003200


def test_cgroup_v1_max_usage_when_there_is_no_v2_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    root = _cgroup(tmp_path, {"memory/memory.max_usage_in_bytes": "524288000\n",
                              "memory/memory.usage_in_bytes": "1024\n"})
    assert container_peak_memory_bytes(root) == 524288000


def test_no_peak_outside_a_pod_or_without_a_readable_cgroup(tmp_path, monkeypatch):
    root = _cgroup(tmp_path, {"memory.peak": "734003200\n"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert container_peak_memory_bytes(root) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert container_peak_memory_bytes(tmp_path / "elsewhere") is None
    assert container_peak_memory_bytes(_cgroup(tmp_path / "bad", {"memory.peak": "max\n"})) is None
