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


def test_oom_kills_counted_by_the_kernel_on_either_cgroup_version(tmp_path, monkeypatch):
    from mousflow.stages.peak_memory import container_oom_kills

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    v2 = _cgroup(tmp_path / "v2", {"memory.events": "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"})
    assert container_oom_kills(v2) == 2
    v1 = _cgroup(tmp_path / "v1", {"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"})
    assert container_oom_kills(v1) == 1
    # a kernel before 4.13 has no oom_kill line in v1: unknown, not zero
    old = _cgroup(tmp_path / "old", {"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"})
    assert container_oom_kills(old) is None
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert container_oom_kills(v1) is None
