"""The imaging stage's windows, found from the partitions' Zarr metadata and uvw without xarray: the same
frequencies, uvw (a padded baseline's zeroed, where that reader left its NaN), dish diameter, field and phase
centre as the xarray reader (`storage.partitions.load_partition`) gives, and the stage's module imports neither
xarray, pandas nor pyarrow (87 MiB of the process that makes the continuum)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import zarr
from calibrated_target import target_processing_set


def test_windows_from_zarr_metadata_are_what_the_xarray_reader_gives(tmp_path):
    from mousflow.stages import imaging
    from mousflow.storage.location import Location
    from mousflow.storage.partitions import NO_CHANNELS, load_partition, open_checked

    class Context:  # the part of StageContext _windows uses
        def path(self, *parts):
            return Location.of(tmp_path).join(*parts)

    rels = [target_processing_set(tmp_path, f"eb{k}", seed=k) for k in (1, 2)]
    # the converter pads a missing baseline with NaN: its uvw come out zeroed, as its samples are flagged
    uvw = zarr.open_array(str(tmp_path / "eb2" / "calibrated.ps.zarr" / "target" / "UVW"), mode="r+")
    padded = uvw[...]
    padded[3, 2] = np.nan
    uvw[...] = padded

    (window,) = imaging._windows(Context(), rels)

    parts = [load_partition(open_checked(Context().path(rel))["target"], "target", channels=NO_CHANNELS)
             for rel in rels]
    expected = np.concatenate([p.uvw_m.reshape(-1, 3) for p in parts])
    # the xarray reader, with no channel selected, has no sample to flag and left the padded row's NaN in place
    assert np.isnan(expected[7 * 6 + 3 * 6 + 2]).all()
    expected[7 * 6 + 3 * 6 + 2] = 0.0
    np.testing.assert_array_equal(window.uvw_m, expected)
    ps = open_checked(Context().path(rels[0]))
    np.testing.assert_array_equal(window.freq_hz, np.asarray(ps["target"].frequency.values, dtype=np.float64))
    assert window.spw == parts[0].spw_name
    assert window.dish_diameter_m == float(np.nanmedian(parts[0].dish_diameter_m)) == 12.0
    assert (window.field_name, window.phase_centre_rad) == (parts[0].field_name, parts[0].phase_centre_rad)
    assert [name for _, name in window.sources] == ["target", "target"]
    # the stacked rows read block by block are the partitions' own, in the same order
    vis, _, flag = window.load()
    assert vis.shape == (2 * 7 * 6, 11) and flag[7 * 6 + 3 * 6 + 2].all()


def test_the_imaging_stage_module_imports_no_xarray():
    code = ("import json, sys; import mousflow.stages.imaging; "
            "print(json.dumps(sorted(m for m in ('xarray', 'pandas', 'pyarrow') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
