"""`mousflow simulate`: a MOUS of ALMA-like execution blocks with known ground truth."""

from mousflow.simulate.presets import PRESETS, Preset
from mousflow.simulate.run import SimulationResult, simulate_mous

__all__ = ["PRESETS", "Preset", "SimulationResult", "simulate_mous"]
