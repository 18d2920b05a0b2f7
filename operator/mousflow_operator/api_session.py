"""kopf's own connection to the API server, with a bounded pool of connections.

kopf (1.45) opens its aiohttp session without a limit on connections (`TCPConnector(limit=0)`). When 1,000
MOUSs are applied at once, every object's worker patches in the same moment, so kopf opened a TLS connection
per MOUS: each keeps asyncio's 256 kB read buffer and OpenSSL's state, and a trace of the operator in that
burst (`bench/control_plane.py --trace-memory`) held 232 MB in 1,854 such buffers (issue 16). A bounded pool
makes the patches wait their turn for a connection instead; the API server answers a patch in milliseconds, so
the burst is hardly slower. Measured at 1,000 (2026-12-04): 32 connections for requests, 225 MB at most and all
queued in 33 s; 16, 236 MB and 40 s; unbounded, 397-483 MB and 26-36 s.

kopf's documented way to change its session is a login handler that returns `kopf.AiohttpSession`. The
credentials are still those kopf finds by default (`kopf.login_via_client`: in-cluster, else the kubeconfig,
through the kubernetes client), and kopf still closes the session when it logs in again.
"""

from __future__ import annotations

import aiohttp
import kopf

from mousflow_operator.settings import OperatorSettings

# The resources kopf watches, each with one long-lived watch stream (one connection) per namespace served:
# MOUS, MOUSCampaign and Jobs (both Job handlers share one stream; the Dask controller is a process of its own).
# The pool holds these streams besides its requests; tests/operator/test_api_session.py checks the number
# against kopf's registry.
WATCHED_RESOURCES = 3


def connection_limit(settings: OperatorSettings) -> int:
    """Connections kopf may hold at once: one per watch stream, and `api_connections` for its requests."""
    return WATCHED_RESOURCES * max(1, len(settings.namespaces)) + settings.api_connections


@kopf.on.login()
async def mous_login(logger, **kwargs) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(logger=logger, **kwargs)
    if info is None:
        return None
    limit = connection_limit(OperatorSettings.from_env())
    # made here, inside kopf's event loop, where kopf uses it
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
                                    headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    logger.info("API server %s: at most %d connections", info.server, limit)
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)
