"""The test bed's pinned versions have one meaning: versions.env (what the scripts and the image tags say) and
hack/gomod/testbed/go.mod (what is actually built) name the same releases, and the kube programs the
multi-call binary serves are the ones cluster-up starts."""

from __future__ import annotations

import re
from pathlib import Path

HACK = Path(__file__).resolve().parents[2] / "hack"
GOMOD = (HACK / "gomod" / "testbed" / "go.mod").read_text()


def _versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (HACK / "testbed" / "versions.env").read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _required(module: str) -> str:
    found = re.search(rf"^\s*{re.escape(module)} (v\S+)", GOMOD, re.MULTILINE)
    assert found, f"{module} is not required by hack/gomod/testbed/go.mod"
    return found.group(1)


def test_versions_env_names_what_go_mod_builds():
    v = _versions()
    assert _required("k8s.io/kubernetes") == v["KUBE_VERSION"]
    assert _required("go.etcd.io/etcd/server/v3") == v["ETCD_VERSION"]
    assert _required("helm.sh/helm/v3") == v["HELM_VERSION"]
    assert _required("github.com/coredns/coredns") == v["COREDNS_VERSION"]
    assert v["COREDNS_VERSION"] in v["COREDNS_IMAGE"]


def test_every_staging_module_is_replaced_by_the_kubernetes_release():
    minor_patch = _versions()["KUBE_VERSION"].removeprefix("v1.")
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => k8s\.io/\S+ (v\S+)", GOMOD, re.MULTILINE)
    assert len(replaced) >= 31
    assert {version for _module, version in replaced} == {f"v0.{minor_patch}"}


def test_the_multicall_binary_serves_every_program_cluster_up_starts():
    main = (HACK / "gomod" / "testbed" / "cmd" / "testbed-kube" / "main.go").read_text()
    served = set(re.findall(r'^\s*"([a-z-]+)":\s+(?:func|run)', main, re.MULTILINE))
    build = (HACK / "testbed" / "build-binaries.sh").read_text()
    linked = set(re.search(r"KUBE_PROGRAMS=\(([^)]*)\)", build).group(1).split())
    assert linked | {"etcd"} == served
    started = set(re.findall(r"start_proc \S+ \"\$(?:KBIN|\(etcd_bin_dir\))/([a-z-]+)\"",
                             (HACK / "testbed" / "cluster-up.sh").read_text()))
    assert started and started <= served, started - served
