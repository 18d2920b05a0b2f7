"""Reading partitions the way other producers write them: four correlations, NaN padding, CASA's UVW sign,
calibrator scans in separate partitions, converter-suffixed field names and combined ALMA intents."""

from __future__ import annotations

import numpy as np
import pytest
from msv4_samples import sample_partition

from mousflow.stages.calibration import same_field
from mousflow.stages.intents import has_role
from mousflow.storage.msv4 import build_msv4_node
from mousflow.storage.partitions import InvalidProcessingSet, concatenate_partitions, load_partition


def test_parallel_hands_kept_nan_padding_flagged_and_zeroed_uvw_sign_restored():
    p = sample_partition()
    p.vis[1, 2] = np.nan  # a baseline the converter padded for one integration
    p.uvw_m[1, 2] = np.nan
    node = build_msv4_node(p)
    # stored as CASA does: antenna1 - antenna2, the negative of the kernels' uvw
    np.testing.assert_allclose(node["UVW"].values[0], -p.uvw_m[0])
    got = load_partition(node, "p")
    assert got.correlations == ["XX", "YY"]
    np.testing.assert_array_equal(got.vis[0], p.vis[0][..., [0, 3]])
    np.testing.assert_allclose(got.uvw_m[0], p.uvw_m[0])
    assert got.flag[1, 2].all() and not got.flag[0].any()
    assert np.isfinite(got.vis).all() and np.isfinite(got.uvw_m).all() and (got.weight[1, 2] == 0).all()
    assert got.dish_diameter_m.tolist() == [12.0] * 4


def test_circular_feeds_and_a_partition_without_parallel_hands():
    assert load_partition(build_msv4_node(sample_partition(("RR", "RL", "LR", "LL")))).correlations == ["RR", "LL"]
    with pytest.raises(InvalidProcessingSet, match="no parallel-hand correlations"):
        load_partition(build_msv4_node(sample_partition(("XY", "YX"))))


def test_scans_in_separate_partitions_are_joined_on_the_union_of_their_baselines():
    early = load_partition(build_msv4_node(sample_partition(times=(0.0, 10.0), pairs=((0, 1), (0, 2)))), "scan1")
    late = load_partition(build_msv4_node(sample_partition(times=(600.0,), pairs=((0, 2), (2, 3)))), "scan2")
    joined = concatenate_partitions([late, early])
    assert joined.time_s.tolist() == [0.0, 10.0, 600.0]
    assert list(zip(joined.antenna1, joined.antenna2, strict=True)) == [(0, 1), (0, 2), (2, 3)]
    assert joined.flag[2, 0].all() and joined.flag[:2, 2].all()  # baselines absent from a scan are flagged
    np.testing.assert_array_equal(joined.vis[2, 1], late.vis[0, 0])
    np.testing.assert_array_equal(joined.vis[0, 0], early.vis[0, 0])


def test_converter_field_names_and_combined_intents():
    assert same_field("J0423-0120", "J0423-0120_3") and same_field("J0423-0120", "J0423-0120")
    assert not same_field("J0423-0120", "J0423-0120_x") and not same_field("J0423-012", "J0423-0120_3")
    combined = ["CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE"]
    assert has_role(combined, "bandpass") and has_role(combined, "flux") and not has_role(combined, "phase")
    assert has_role(["OBSERVE_TARGET#ON_SOURCE"], "target")


def test_imaging_takes_the_dish_diameter_from_antenna_xds(tmp_path):
    """7 m (ACA) dishes: the imaging stage's window uses them for the primary beam, and its image plan covers
    the wider field they see."""
    from mousflow.science.imaging import plan_image
    from mousflow.stages.imaging import _windows
    from mousflow.storage.location import Location
    from mousflow.storage.zarr_io import finalize_processing_set, write_processing_set_node, write_processing_set_root

    class Context:  # the part of StageContext _windows uses
        def path(self, *parts):
            return Location.of(tmp_path).join(*parts)

    fields = {}
    for dish in (12.0, 7.0):
        loc = Location.of(tmp_path / f"d{dish:.0f}" / "calibrated.ps.zarr")
        write_processing_set_root(loc)
        p = sample_partition(correlations=("XX", "YY"), dish=dish)
        p.intents = ["OBSERVE_TARGET#ON_SOURCE"]
        write_processing_set_node(loc, "target", build_msv4_node(p))
        finalize_processing_set(loc)
        (window,) = _windows(Context(), [f"d{dish:.0f}/calibrated.ps.zarr"])
        assert window.dish_diameter_m == dish
        fields[dish] = plan_image(window.uvw_m, window.freq_hz, window.dish_diameter_m).fov_rad
    assert fields[7.0] / fields[12.0] == pytest.approx(12.0 / 7.0, rel=0.05)
