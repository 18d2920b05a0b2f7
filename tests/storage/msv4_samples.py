"""Small MSv4 partitions for the storage tests, built from random arrays (tests/storage)."""

from __future__ import annotations

import numpy as np

from mousflow.storage.msv4 import AntennaTable, FieldInfo, Partition

NAMES = ["DA41", "DA42", "DA43", "DA44"]


def sample_partition(correlations=("XX", "XY", "YX", "YY"), times=(0.0, 10.0), pairs=((0, 1), (0, 2), (1, 2), (2, 3)),
                     dish=12.0, n_chan=3) -> Partition:
    rng = np.random.default_rng(3)
    a1, a2 = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    shape = (len(times), len(pairs), n_chan, len(correlations))
    vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    uvw = rng.standard_normal((len(times), len(pairs), 3)) * 100
    antennas = AntennaTable(NAMES, ["A1", "A2", "A3", "A4"], np.zeros((4, 3)), np.full(4, dish))
    return Partition(
        time_unix_s=np.array(times, dtype=np.float64), integration_s=10.0,
        scan_names=np.array(["1"] * len(times)), antenna1=a1, antenna2=a2, antennas=antennas,
        frequency_hz=100e9 + 0.1e9 * np.arange(n_chan), channel_width_hz=1e8, spw_name="spw0",
        correlations=tuple(correlations), field=FieldInfo("J0329-2357_2", "J0329-2357", 0.9, -0.4),
        intents=["CALIBRATE_PHASE#ON_SOURCE"], vis=vis, flag=np.zeros(shape, bool),
        weight=np.full(shape, 2.0, np.float32), uvw_m=uvw, execution_block_uid="uid://A002/X1/X1",
        project_uid="2026.1.00001.S", creation_date="2026-01-01T00:00:00.000")
