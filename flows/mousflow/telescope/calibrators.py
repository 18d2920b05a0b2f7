"""Calibrator fields the simulator observes, and the flux models the pipeline trusts.

Only flux calibrators ("grid sources", monitored by the observatory) have a trusted model; bandpass and phase
calibrators are variable quasars whose flux density the pipeline derives from the flux calibrator.
Positions are J2000 (deg).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FluxModel:
    flux_jy: float
    reference_hz: float
    spectral_index: float

    def at(self, freq_hz):
        return self.flux_jy * (freq_hz / self.reference_hz) ** self.spectral_index


@dataclass(frozen=True)
class CalibratorField:
    name: str
    ra_deg: float
    dec_deg: float


BANDPASS_CALIBRATOR = CalibratorField("J0522-3627", 80.741603, -36.458569)
FLUX_CALIBRATOR = CalibratorField("J0423-0120", 65.815836, -1.342518)
PHASE_CALIBRATOR = CalibratorField("J0329-2357", 52.478442, -23.951997)

# Flux-calibrator models (what a calibrator catalogue query would return for the observing date).
FLUX_MODELS: dict[str, FluxModel] = {
    "J0423-0120": FluxModel(flux_jy=1.25, reference_hz=100.0e9, spectral_index=-0.65),
}
