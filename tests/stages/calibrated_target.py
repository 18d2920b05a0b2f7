"""A small calibrated processing set with one target partition, as the calibration stage leaves it, for the
imaging tests (tests/stages)."""

from __future__ import annotations

import numpy as np


def target_processing_set(root, name, seed, n_time=7, n_chan=11):
    """A calibrated processing set with one target partition: 4 antennas, XX/YY, random weights and flags."""
    from mousflow.storage.location import Location
    from mousflow.storage.msv4 import AntennaTable, FieldInfo, Partition, build_msv4_node
    from mousflow.storage.zarr_io import finalize_processing_set, write_processing_set_node, write_processing_set_root

    rng = np.random.default_rng(seed)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    shape = (n_time, len(pairs), n_chan, 2)
    p = Partition(
        time_unix_s=1e9 + 10.0 * np.arange(n_time), integration_s=10.0, scan_names=np.array(["1"] * n_time),
        antenna1=np.array([a for a, _ in pairs]), antenna2=np.array([b for _, b in pairs]),
        antennas=AntennaTable(["DA41", "DA42", "DA43", "DA44"], ["A1", "A2", "A3", "A4"], np.zeros((4, 3)),
                              np.full(4, 12.0)),
        frequency_hz=230e9 + 1e7 * np.arange(n_chan), channel_width_hz=1e7, spw_name="ALMA_RB_06#BB_1#SW-01",
        correlations=("XX", "YY"), field=FieldInfo("CDFS", "CDFS", 0.9, -0.4),
        intents=["OBSERVE_TARGET#ON_SOURCE"],
        vis=(rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64),
        flag=rng.random(shape) < 0.15, weight=rng.uniform(0.5, 3.0, shape).astype(np.float32),
        uvw_m=rng.standard_normal((n_time, len(pairs), 3)) * 100, execution_block_uid=f"uid://A002/X1/X{seed}",
        project_uid="2026.1.00001.S", creation_date="2026-01-01T00:00:00.000")
    loc = Location.of(root / name / "calibrated.ps.zarr")
    write_processing_set_root(loc)
    write_processing_set_node(loc, "target", build_msv4_node(p))
    finalize_processing_set(loc)
    return f"{name}/calibrated.ps.zarr"
