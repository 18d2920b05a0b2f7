"""Facts about the telescope: bands, site, antenna configurations, receivers, primary beam.

These are constants of ALMA (public figures, order-of-magnitude where the real value varies with weather),
shared by the simulator, the pipeline and QA so that all of them agree on the same instrument.
"""

from mousflow.telescope.alma import (
    BANDS,
    Band,
    band_for_frequency,
    primary_beam_fwhm_rad,
    qa2_rms_tolerance,
)

# The array configurations (and the site) need astropy, imported on first use: the bands alone are what the
# operator's spec checks read, and it does not load astropy (issue 16).
_FROM_ARRAYS = ("ALMA_SITE", "ArrayConfiguration", "load_configuration")


def __getattr__(name: str):
    if name in _FROM_ARRAYS:
        from mousflow.telescope import arrays

        return getattr(arrays, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
