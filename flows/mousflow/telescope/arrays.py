"""Antenna configurations: positions from the ALMA configuration files shipped with the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import astropy.units as u
import numpy as np
from astropy.coordinates import EarthLocation

# Array centre (WGS84). Given explicitly: astropy's site registry needs the network.
ALMA_SITE = EarthLocation.from_geodetic(lon=-67.7549290 * u.deg, lat=-23.022886 * u.deg, height=5056.8 * u.m)

CONFIGURATIONS = {"alma.cycle7.3": "alma.cycle7.3.cfg", "aca.cycle7": "aca.cycle7.cfg"}


@dataclass(frozen=True)
class ArrayConfiguration:
    name: str
    enu_m: np.ndarray
    """(n_antenna, 3) east, north, up offsets from the array centre."""
    dish_diameter_m: np.ndarray
    pad_names: tuple[str, ...]
    site: EarthLocation = ALMA_SITE

    @property
    def n_antennas(self) -> int:
        return len(self.pad_names)

    def subset(self, indices) -> ArrayConfiguration:
        idx = np.asarray(indices)
        return ArrayConfiguration(self.name, self.enu_m[idx], self.dish_diameter_m[idx],
                                  tuple(self.pad_names[i] for i in idx), self.site)

    def itrf_m(self) -> np.ndarray:
        """Geocentric (ITRF) positions: the ENU offsets rotated at the site's longitude and latitude."""
        lon = self.site.lon.rad
        lat = self.site.lat.rad
        e, n, up = self.enu_m.T
        dx = -np.sin(lon) * e - np.sin(lat) * np.cos(lon) * n + np.cos(lat) * np.cos(lon) * up
        dy = np.cos(lon) * e - np.sin(lat) * np.sin(lon) * n + np.cos(lat) * np.sin(lon) * up
        dz = np.cos(lat) * n + np.sin(lat) * up
        centre = np.array([self.site.x.value, self.site.y.value, self.site.z.value])
        return centre + np.stack([dx, dy, dz], axis=1)

    def baseline_lengths_m(self) -> np.ndarray:
        i, j = np.triu_indices(self.n_antennas, k=1)
        return np.linalg.norm(self.enu_m[j] - self.enu_m[i], axis=1)


def load_configuration(name: str = "alma.cycle7.3") -> ArrayConfiguration:
    """Read a CASA-style .cfg (x y z diameter pad; metres, local tangent plane) shipped with mousflow."""
    if name not in CONFIGURATIONS:
        raise ValueError(f"unknown array configuration {name!r}; known: {', '.join(CONFIGURATIONS)}")
    text = resources.files("mousflow.telescope").joinpath("data", CONFIGURATIONS[name]).read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    enu = np.array([[float(r[0]), float(r[1]), float(r[2])] for r in rows])
    diam = np.array([float(r[3]) for r in rows])
    pads = tuple(r[4] for r in rows)
    return ArrayConfiguration(name, enu, diam, pads)
