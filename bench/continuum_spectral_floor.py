"""Why the corpus's two-block continuum is above the thermal noise (issue 12, item 3): the error floor of a
single-term continuum (MFS) CLEAN on a wide band, for a point source with and without a spectral index.

The continuum CLEAN of `mousflow.science.imaging.image_mfs` models the sky with one flux per component for the
whole band. A source whose flux changes across the band (its own spectral index, or the primary beam's, which
narrows with frequency: an off-centre source looks steeper) leaves a residual that no point component removes
and that does not fall with more data. This prints that residual floor on noise-free-enough data (43 antennas
of the ALMA configuration, a 9-minute track, 32 channels over 97-112 GHz as the corpus's four windows span,
a 20 mJy source 20" from the centre, visibilities with 0.5 mJy noise so the thermal rms is ~1 uJy).

Measured (2026-12-05): flat spectrum, residual rms 0.71 uJy (thermal 0.96); spectral index -1.5, 10.6 uJy,
11x the thermal noise. In the corpus's 12 m case (both sources off centre, apparent indices about -0.5 and
-1.6) the same floor is about 10 uJy (a block made with 100x less noise still images to 9.9 uJy), which leaves a
single block 1.08x its expected noise and the two blocks together 1.21x: the floor stays while the thermal
noise falls by sqrt(2). The fix is a continuum model with a spectral term (multi-term MFS, as tclean's
`mtmfs` or WSClean's `-join-channels -fit-spectral-pol`); not done yet.

Usage: python bench/continuum_spectral_floor.py [--alphas 0 -0.7 -1.5]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))

from mousflow.science.geometry import antenna_uvw_m, baseline_uvw_m
from mousflow.science.imaging import image_mfs, plan_image
from mousflow.science.imaging.noise import robust_rms
from mousflow.telescope import load_configuration

SPEED_OF_LIGHT = 299792458.0


def coverage(n_time: int = 24, minutes: float = 9.0, dec_deg: float = -27.8):
    """uvw (m) of every baseline of the ALMA configuration's 43 antennas over a short track at transit."""
    cfg = load_configuration()
    ha = np.linspace(-minutes / 2, minutes / 2, n_time) / 60 * math.pi / 12
    a1, a2 = np.triu_indices(cfg.enu_m.shape[0], 1)
    uvw = antenna_uvw_m(cfg.enu_m, cfg.site.lat.rad, ha, math.radians(dec_deg))
    return baseline_uvw_m(uvw, a1, a2).reshape(-1, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, -0.7, -1.5])
    a = p.parse_args(argv)
    uvw = coverage()
    freq = np.linspace(97e9, 112e9, 32)
    sigma = 5e-4  # Jy, of each visibility's real and imaginary part
    plan = plan_image(uvw, freq, 12.0)
    l, m = math.radians(15 / 3600), math.radians(-14 / 3600)
    n = math.sqrt(1 - l * l - m * m)
    phase = -2j * math.pi * (uvw[:, :1] * l + uvw[:, 1:2] * m + uvw[:, 2:3] * (n - 1)) * freq[None, :] / SPEED_OF_LIGHT
    print(f"{uvw.shape[0]} baselines x times, {freq.size} channels {freq[0] / 1e9:.0f}-{freq[-1] / 1e9:.0f} GHz, "
          f"a 20 mJy source 20\" off centre, {plan.npix} pixels")
    for alpha in a.alphas:
        rng = np.random.default_rng(1)
        flux = 0.02 * (freq / freq.mean()) ** alpha
        vis = flux[None, :] * np.exp(phase) + sigma * (rng.normal(size=phase.shape) + 1j * rng.normal(size=phase.shape))
        weight = np.full(vis.shape, 1 / (2 * sigma**2))
        products = image_mfs(vis, uvw, freq, weight, np.zeros(vis.shape, bool), plan)
        rms = robust_rms(products.residual.squeeze())
        print(f"spectral index {alpha:+.1f}: residual rms {rms * 1e6:.2f} uJy = {rms / products.predicted_rms:.1f}x "
              f"the thermal {products.predicted_rms * 1e6:.2f} uJy ({products.n_components} components, "
              f"{products.n_major} major cycles)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
