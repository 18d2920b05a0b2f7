"""ALMA bands, site and receiver figures.

Tsys and aperture efficiencies are representative values for median weather at the zenith-ish elevations a
scheduler picks (ALMA Technical Handbook orders of magnitude); they set the simulated noise and the
predicted sensitivity consistently, which is all the pipeline needs of them.
"""

from __future__ import annotations

from dataclasses import dataclass

# m/s, exact by the SI's definition of the metre. Not from astropy.constants: the band table below is read by
# the operator's spec checks, which do not load astropy (issue 16: its memory); the site is in arrays.py.
SPEED_OF_LIGHT = 299_792_458.0

# Correlator efficiencies used by the ALMA sensitivity calculator: quantisation and correlator.
ETA_QUANTISATION = 0.96
ETA_CORRELATOR = 0.88


@dataclass(frozen=True)
class Band:
    number: int
    low_hz: float
    high_hz: float
    tsys_k: float
    aperture_efficiency: float

    def contains(self, frequency_hz: float) -> bool:
        return self.low_hz <= frequency_hz <= self.high_hz


BANDS: dict[int, Band] = {
    b.number: b
    for b in (
        Band(1, 35e9, 50e9, 45.0, 0.71),
        Band(2, 67e9, 116e9, 55.0, 0.71),
        Band(3, 84e9, 116e9, 75.0, 0.71),
        Band(4, 125e9, 163e9, 85.0, 0.70),
        Band(5, 163e9, 211e9, 120.0, 0.69),
        Band(6, 211e9, 275e9, 100.0, 0.68),
        Band(7, 275e9, 373e9, 150.0, 0.63),
        Band(8, 385e9, 500e9, 400.0, 0.60),
        Band(9, 602e9, 720e9, 1000.0, 0.50),
        Band(10, 787e9, 950e9, 1400.0, 0.45),
    )
}


def band_for_frequency(frequency_hz: float) -> list[int]:
    """The bands whose receivers cover a sky frequency (bands 2 and 3 overlap, so this is a list)."""
    return [b.number for b in BANDS.values() if b.contains(frequency_hz)]


def qa2_rms_tolerance(band: int) -> float:
    """Fraction by which the achieved rms may exceed the requested sensitivity and still pass QA2.

    ALMA's rule: 10 % for bands 1 and 3-6, 15 % for 7-8, 20 % for 9-10. Band 2 is not named in the rule;
    it is a low-frequency band like 3, so it gets 10 %.
    """
    if band in (7, 8):
        return 0.15
    if band in (9, 10):
        return 0.20
    return 0.10


def primary_beam_fwhm_rad(frequency_hz: float, dish_diameter_m: float) -> float:
    """FWHM of the primary beam: 1.13 lambda / D for ALMA's tapered illumination (12 m and 7 m dishes)."""
    return 1.13 * SPEED_OF_LIGHT / frequency_hz / dish_diameter_m


def system_equivalent_flux_density_jy(band: int, dish_diameter_m: float) -> float:
    """SEFD = 2 k Tsys / (eta_a A), in Jy, for one antenna in `band`."""
    import math

    from astropy.constants import k_B

    b = BANDS[band]
    area = math.pi * (dish_diameter_m / 2) ** 2
    return 2 * k_B.value * b.tsys_k / (b.aperture_efficiency * area) / 1e-26


def visibility_noise_jy(band: int, dish_diameter_m: float, channel_width_hz: float, integration_s: float,
                        tsys_factor: float = 1.0) -> float:
    """Radiometer equation: rms of the real (and of the imaginary) part of one correlation product.

    sigma = SEFD / (eta_q eta_c sqrt(2 dnu t)). Averaging the two parallel hands into Stokes I and N(N-1)/2
    baselines over the whole time gives the familiar image-noise formula.
    """
    import math

    sefd = system_equivalent_flux_density_jy(band, dish_diameter_m) * tsys_factor
    return sefd / (ETA_QUANTISATION * ETA_CORRELATOR * math.sqrt(2.0 * channel_width_hz * integration_s))
