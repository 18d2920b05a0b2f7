"""Image products in Zarr: one group per image (a continuum plane or a cube), one array per product.

Arrays are (n_chan, npix, npix) float32 in sky orientation (mousflow.science.imaging.coords), chunked by
channel chunk so an imaging worker writes its slab without touching its neighbours'. The FITS header of the
image (WCS, beam) is kept in the group's attributes, so packaging can export FITS without re-deriving it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import zarr

from mousflow.storage.location import Location

if TYPE_CHECKING:
    from astropy.io import fits

CUBE_PRODUCTS = ("image", "image_pbcor", "residual", "pb")
PLANE_PRODUCTS = ("image", "image_pbcor", "residual", "model", "psf", "pb", "mask")


@dataclass
class ImageStore:
    loc: Location

    def create(self, products: tuple[str, ...], n_chan: int, npix: int, chunk_channels: int, attrs: dict) -> None:
        """Create (or re-create) the arrays; existing content is discarded.

        The attributes are written last: a stage that finds them (its input hash) trusts that every array is
        there, so a pod killed between the group and its arrays must leave a group without them (found by
        the chaos suite: a cube group with its hash and no arrays failed each later attempt with KeyError).
        """
        root = zarr.open_group(self.loc.zarr_store(), mode="w", zarr_format=3)
        for name in products:
            root.create_array(name, shape=(n_chan, npix, npix), chunks=(chunk_channels, npix, npix),
                              dtype="float32", fill_value=np.nan)
        root.attrs.update(attrs)

    def exists(self) -> bool:
        return self.loc.join("zarr.json").exists()

    def group(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(self.loc.zarr_store(), mode=mode, zarr_format=3)

    @property
    def attrs(self) -> dict:
        return dict(self.group("r").attrs)

    def update_attrs(self, **attrs) -> None:
        self.group().attrs.update(attrs)

    def write_slab(self, c0: int, planes: dict[str, np.ndarray]) -> dict[str, str]:
        """Write planes[name] (n, npix, npix) at channels c0..c0+n; return the sha256 of each slab written."""
        g = self.group()
        digests = {}
        for name, data in planes.items():
            arr = np.asarray(data, dtype=np.float32)
            g[name][c0 : c0 + arr.shape[0]] = arr
            digests[name] = hashlib.sha256(arr.tobytes()).hexdigest()
        return digests

    def slab_digests(self, c0: int, c1: int, names) -> dict[str, str]:
        g = self.group("r")
        return {n: hashlib.sha256(np.asarray(g[n][c0:c1], dtype=np.float32).tobytes()).hexdigest() for n in names}

    def read(self, name: str) -> np.ndarray:
        return np.asarray(self.group("r")[name][:])


def header_to_attrs(header: fits.Header) -> list[list]:
    """A FITS header as JSON-able (key, value, comment) cards."""
    return [[c.keyword, c.value, c.comment] for c in header.cards if c.keyword not in ("", "COMMENT", "HISTORY")]


def attrs_to_header(cards: list[list]) -> fits.Header:
    from astropy.io import fits  # here, not with the module: an imaging worker writing cube slabs needs no FITS

    h = fits.Header()
    for key, value, comment in cards:
        h[key] = (value, comment)
    return h
