"""Shared fixtures: simulated MOUSs are made once per test session and reused read-only."""

from __future__ import annotations

import pytest

from mousflow.simulate import simulate_mous


@pytest.fixture(scope="session")
def tiny_mous(tmp_path_factory):
    """A `tiny` MOUS (seed 1): the simulation result; its files must not be modified by tests."""
    return simulate_mous("tiny", str(tmp_path_factory.mktemp("sim") / "tiny"), seed=1)
