"""kopf's session to the API server (mousflow_operator.api_session): kopf's own credentials, a bounded pool.

The bound's effect on memory at scale is shown by bench/control_plane.py (its largest number of connections to
the API server and the operator's memory) and tests/cluster/test_control_plane_scale.py."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap

import kopf
import pytest
import yaml

from mousflow_operator import api_session
from mousflow_operator.settings import OperatorSettings


def test_the_pool_has_a_connection_per_watch_stream_besides_its_requests():
    assert api_session.connection_limit(OperatorSettings()) == 3 + 32
    several = OperatorSettings.from_env({"MOUSFLOW_NAMESPACES": "a b c", "MOUSFLOW_API_CONNECTIONS": "5"})
    assert api_session.connection_limit(several) == 3 * 3 + 5


def test_the_watched_resources_are_those_kopf_watches():
    """A new watched resource takes a connection of the pool for good: WATCHED_RESOURCES must count it. In a
    process of its own, importing what `python -m mousflow_operator` imports (the Dask controller's handlers,
    which another test imports, run in a process of their own)."""
    script = textwrap.dedent("""
        import sys
        for unused in ("kubernetes_asyncio", "pykube"):
            sys.modules.setdefault(unused, None)
        import kopf
        from mousflow_operator import api_session, campaign, handlers
        registry = kopf.get_default_registry()
        selectors = set()
        for part in (registry._indexing, registry._watching, registry._spawning, registry._changing):
            selectors |= part.get_all_selectors()
        print(len(selectors), sorted(map(str, selectors)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    assert int(out.split()[0]) == api_session.WATCHED_RESOURCES, out


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://10.1.2.3:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "s3cr3t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "alma"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("MOUSFLOW_API_CONNECTIONS", "7")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    import kubernetes.config.kube_config as kc
    monkeypatch.setattr(kc, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


def test_the_session_carries_kopfs_own_credentials_and_the_bound(kubeconfig):
    logger = logging.getLogger("test")
    settings = kopf.OperatorSettings()
    own = kopf.login_via_client(logger=logger, settings=settings)

    async def login():
        info = await api_session.mous_login(logger=logger, settings=settings)
        try:
            return info, info.aiohttp_session.connector.limit, dict(info.aiohttp_session.headers)
        finally:
            await info.aiohttp_session.close()

    info, limit, headers = asyncio.run(login())
    assert isinstance(info, kopf.AiohttpSession)
    assert (info.server, info.priority) == (own.server, own.priority) == ("https://10.1.2.3:6443", own.priority)
    assert headers["Authorization"] == own.as_http_headers()["Authorization"] == "Bearer s3cr3t"
    assert limit == api_session.WATCHED_RESOURCES + 7
