"""`python -m mousflow_operator` (or `mousflow operator`): run the operator with the settings from the environment.

Flags: --verbose; --liveness URL (kopf's health endpoint, overrides MOUSFLOW_LIVENESS_ENDPOINT), what the
chart's liveness and readiness probes ask.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    # kopf imports kubernetes_asyncio and pykube when they are installed (dask-kubernetes brings them along), only
    # to recognise their objects, which this operator never hands it: about 30 MB of its memory (issue 16).
    for unused in ("kubernetes_asyncio", "pykube"):
        sys.modules.setdefault(unused, None)
    import kopf

    from mousflow_operator import api_session, campaign, handlers
    from mousflow_operator.cluster import check_cluster_reachable
    from mousflow_operator.settings import OperatorSettings

    parser = argparse.ArgumentParser(prog="python -m mousflow_operator")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--liveness", metavar="URL", default=None,
                        help="serve kopf's health endpoint here, e.g. http://0.0.0.0:8080/healthz")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    settings = OperatorSettings.from_env()
    # kopf would log a traceback per failed attempt and keep retrying: an unusable cluster is one line, now.
    check_cluster_reachable()
    kopf.configure(verbose=args.verbose)
    # aiohttp.access: a line per health probe
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "httpx", "httpcore", "fsspec", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # standalone: one operator per installation (the chart runs one replica with the Recreate strategy), so
    # kopf's peering (and its peering resources and RBAC) is not used.
    kopf.run(standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
             liveness_endpoint=args.liveness or settings.liveness_endpoint, registry=kopf.get_default_registry())
    del api_session, handlers, campaign  # imported for their handlers' registration
    end_without_finalizing(0)
    return 0  # not reached


def end_without_finalizing(code: int) -> None:
    """End the process once kopf has stopped (its cleanup done: finalizers released), without Python's
    finalization. Flow runs go on in daemon threads (flow_runner=thread) and one may be in C++ code at that
    moment (a flow being cancelled for its deleted MOUS, reading storage); finalization ends such a thread with a
    forced unwind, which a C++ catch(...) turns into abort(): "FATAL: exception not rethrown", exit -6 instead of 0
    (seen in the cluster tier). What the operator owns lives in the API server and in storage: nothing is left
    to finalize but its output, flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    from mousflow.errors import describe_error, exit_code_of
    from mousflow.storage.location import classify_failure

    try:
        sys.exit(main())
    except Exception as exc:
        failure = classify_failure(exc)
        print(f"mousflow-operator: error: {describe_error(failure)}", file=sys.stderr)
        sys.exit(exit_code_of(failure.reason))
