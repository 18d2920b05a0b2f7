"""An ALMA-like observing schedule for one execution block.

Bandpass calibrator, flux calibrator, then the phase calibrator alternating with the science target, ending
on the phase calibrator so that every target scan is bracketed by two gain solutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mousflow.simulate.presets import Preset

INTENT_BANDPASS = "CALIBRATE_BANDPASS#ON_SOURCE"
INTENT_FLUX = "CALIBRATE_FLUX#ON_SOURCE"
INTENT_PHASE = "CALIBRATE_PHASE#ON_SOURCE"
INTENT_TARGET = "OBSERVE_TARGET#ON_SOURCE"


@dataclass(frozen=True)
class Scan:
    number: int
    role: str  # bandpass | flux | phase | target
    intent: str
    start_s: float
    n_integrations: int
    integration_s: float

    @property
    def times_s(self) -> np.ndarray:
        return self.start_s + (np.arange(self.n_integrations) + 0.5) * self.integration_s


SLEW_S = 10.0


def build_schedule(preset: Preset, start_s: float) -> list[Scan]:
    plan = [("bandpass", INTENT_BANDPASS, preset.bandpass_scan_s), ("flux", INTENT_FLUX, preset.flux_scan_s)]
    for _ in range(preset.n_cycles):
        plan += [("phase", INTENT_PHASE, preset.phase_scan_s), ("target", INTENT_TARGET, preset.target_scan_s)]
    plan.append(("phase", INTENT_PHASE, preset.phase_scan_s))
    scans, t = [], start_s
    for number, (role, intent, duration) in enumerate(plan, start=1):
        n = max(1, round(duration / preset.integration_s))
        scans.append(Scan(number, role, intent, t, n, preset.integration_s))
        t += n * preset.integration_s + SLEW_S
    return scans
