"""`mousflow simulate`: a MOUS of ALMA-like execution blocks with known ground truth.

The simulator itself (`run`) is imported on first use: the command line lists the presets in its help, and every
stage pod builds that command line, which should not cost it the simulator's imports."""

from mousflow.simulate.presets import PRESETS, Preset

__all__ = ["PRESETS", "Preset", "SimulationResult", "simulate_mous"]


def __getattr__(name: str):
    if name in ("SimulationResult", "simulate_mous"):
        from mousflow.simulate import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
