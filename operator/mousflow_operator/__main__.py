"""`python -m mousflow_operator` (or `mousflow operator`): run the operator with the settings from the environment."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    import kopf

    from mousflow_operator import handlers
    from mousflow_operator.settings import OperatorSettings

    settings = OperatorSettings.from_env()
    verbose = "--verbose" in (argv if argv is not None else sys.argv[1:])
    kopf.configure(verbose=verbose)
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "httpx", "httpcore", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kopf.run(standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
             registry=kopf.get_default_registry())
    del handlers  # imported for its handlers' registration
    return 0


if __name__ == "__main__":
    sys.exit(main())
