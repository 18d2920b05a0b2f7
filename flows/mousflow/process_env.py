"""Environment every mousflow process that holds visibilities starts with: a stage run as a local child
process or in a stage Job's pod, and the imaging stage's Dask workers (local ones inherit the stage's
environment; worker pods get it in their spec). A module of its own, below every layer, as pod_security.

MALLOC_ARENA_MAX=2: glibc gives every thread that allocates a heap arena of its own, up to 8 per core, and
memory freed in one arena serves no other. A stage's threads (the partition reader's, the gridder's) left
their arenas holding freed blocks: on the benchmark's execution block (bench/compare_imagers.py) the
calibration stage peaked at 534 MB with glibc's default and 463 MB with 2 arenas, the imaging stage at 398 MB
and 359 MB, for the same CPU time. It must be set before the process starts, hence the environment. (The
operator's Deployment sets the same in the chart.)
"""

from __future__ import annotations

STAGE_PROCESS_ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}


def stage_process_env_vars() -> list[dict]:
    """STAGE_PROCESS_ENV as a container's `env` entries."""
    return [{"name": name, "value": value} for name, value in sorted(STAGE_PROCESS_ENV.items())]
