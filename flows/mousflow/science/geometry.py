"""Array geometry: hour angles, Earth-rotation uvw, elevations, projections between (l, m) and RA/Dec.

Written here rather than with astropy's full frame machinery because uvw for millions of samples must be
vectorised: the standard rotation from the local (east, north, up) frame to (u, v, w) (Thompson, Moran &
Swenson, ch. 4), driven by the sidereal time.
Precession and nutation are ignored: positions are treated as mean J2000 ~ ICRS, consistently everywhere.
"""

from __future__ import annotations

import numpy as np


def local_sidereal_time_rad(times_unix_s: np.ndarray, longitude_rad: float) -> np.ndarray:
    """Local mean sidereal time from the Earth rotation angle plus the IAU 2006 precession polynomial.

    Evaluated directly because astropy's full sidereal-time machinery costs ~50 ms per call and the simulator
    calls it per scan; UT1 is taken as UTC (|UT1-UTC| < 0.9 s, a 13 arcsec rotation: irrelevant here, and the
    uvw written with the data is what every later stage uses).
    """
    jd_offset = np.asarray(times_unix_s, dtype=np.float64) / 86400.0 + (2440587.5 - 2451545.0)
    era = 2 * np.pi * np.mod(0.7790572732640 + 0.00273781191135448 * jd_offset + np.mod(jd_offset, 1.0), 1.0)
    t = jd_offset / 36525.0
    precession_arcsec = 0.014506 + 4612.156534 * t + 1.3915817 * t**2
    return np.mod(era + np.radians(precession_arcsec / 3600.0) + longitude_rad, 2 * np.pi)


def enu_to_local_equatorial(enu_m: np.ndarray, latitude_rad: float) -> np.ndarray:
    """(east, north, up) -> (X to the local meridian on the equator, Y east, Z to the north pole)."""
    e, n, up = np.moveaxis(np.asarray(enu_m, dtype=np.float64), -1, 0)
    sl, cl = np.sin(latitude_rad), np.cos(latitude_rad)
    return np.stack([-sl * n + cl * up, e, cl * n + sl * up], axis=-1)


def antenna_uvw_m(enu_m: np.ndarray, latitude_rad: float, hour_angle_rad: np.ndarray, dec_rad: float) -> np.ndarray:
    """uvw of each antenna position relative to the array centre: (n_time, n_antenna, 3) metres."""
    xyz = enu_to_local_equatorial(enu_m, latitude_rad)  # (n_ant, 3)
    h = np.asarray(hour_angle_rad)[:, None]
    x, y, z = xyz[None, :, 0], xyz[None, :, 1], xyz[None, :, 2]
    sh, ch = np.sin(h), np.cos(h)
    sd, cd = np.sin(dec_rad), np.cos(dec_rad)
    u = sh * x + ch * y
    v = -sd * ch * x + sd * sh * y + cd * z
    w = cd * ch * x - cd * sh * y + sd * z
    return np.stack([u, v, w], axis=-1)


def baseline_uvw_m(antenna_uvw: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray) -> np.ndarray:
    """uvw = x(antenna2) - x(antenna1): (n_time, n_baseline, 3)."""
    return antenna_uvw[:, antenna2, :] - antenna_uvw[:, antenna1, :]


def elevation_rad(latitude_rad: float, hour_angle_rad: np.ndarray, dec_rad: float) -> np.ndarray:
    return np.arcsin(
        np.sin(latitude_rad) * np.sin(dec_rad) + np.cos(latitude_rad) * np.cos(dec_rad) * np.cos(hour_angle_rad)
    )


def radec_to_lm(ra_rad, dec_rad, ra0_rad: float, dec0_rad: float):
    """Orthographic (SIN) direction cosines of (ra, dec) about the phase centre (ra0, dec0)."""
    dra = np.asarray(ra_rad) - ra0_rad
    l = np.cos(dec_rad) * np.sin(dra)
    m = np.sin(dec_rad) * np.cos(dec0_rad) - np.cos(dec_rad) * np.sin(dec0_rad) * np.cos(dra)
    return l, m


def lm_to_radec(l, m, ra0_rad: float, dec0_rad: float):
    """Inverse of `radec_to_lm` (for directions in the hemisphere of the phase centre)."""
    l = np.asarray(l, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    n = np.sqrt(1.0 - l * l - m * m)
    dec = np.arcsin(m * np.cos(dec0_rad) + n * np.sin(dec0_rad))
    ra = ra0_rad + np.arctan2(l, n * np.cos(dec0_rad) - m * np.sin(dec0_rad))
    return np.mod(ra, 2 * np.pi), dec
