"""Facts about the telescope: bands, site, antenna configurations, receivers, primary beam.

These are constants of ALMA (public figures, order-of-magnitude where the real value varies with weather),
shared by the simulator, the pipeline and QA so that all of them agree on the same instrument.
"""

from mousflow.telescope.alma import (
    ALMA_SITE,
    BANDS,
    Band,
    band_for_frequency,
    primary_beam_fwhm_rad,
    qa2_rms_tolerance,
)
from mousflow.telescope.arrays import ArrayConfiguration, load_configuration

__all__ = [
    "ALMA_SITE",
    "BANDS",
    "ArrayConfiguration",
    "Band",
    "band_for_frequency",
    "load_configuration",
    "primary_beam_fwhm_rad",
    "qa2_rms_tolerance",
]
