"""Orchestration with Prefect: one flow run per MOUS, its stages launched in order, each resumable."""

from mousflow.pipeline.flow import FlowResult, process_mous
from mousflow.pipeline.launchers import LocalProcessLauncher, StageLauncher

__all__ = ["FlowResult", "LocalProcessLauncher", "StageLauncher", "process_mous"]
