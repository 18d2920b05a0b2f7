"""Orchestration with Prefect: one flow run per MOUS, its stages launched in order, each resumable.

The flow and the launchers are imported when first asked for, not with the package: the operator imports
modules of this package (the Job builders, the reports, the history) without running flows in its own process
when flows run in pods of their own (MOUSFLOW_FLOW_RUNNER=pod), and Prefect alone costs about 70 MB there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mousflow.pipeline.flow import FlowResult, process_mous
    from mousflow.pipeline.launchers import LocalProcessLauncher, StageLauncher

__all__ = ["FlowResult", "LocalProcessLauncher", "StageLauncher", "process_mous"]
_WHERE = {"FlowResult": "flow", "process_mous": "flow", "LocalProcessLauncher": "launchers",
          "StageLauncher": "launchers"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mousflow.pipeline.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mousflow.pipeline' has no attribute {name!r}")
