"""Shared fixtures: simulated MOUSs and CASA-made Measurement Sets are made once per test session and reused
read-only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mousflow.simulate import simulate_mous


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full: the full-size version of a test that `make test` runs at a reduced "
                            "size (`make test-full`); also marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Chart tests run last: on a fresh machine `make test` is still building their helm binary in the
    background (hack/testbed/prebuild.sh) when this session starts, and nothing else needs to wait for it."""
    items.sort(key=lambda item: "helm" in getattr(item, "fixturenames", ()))


def _metadata_agrees_with_xradio(loc) -> None:
    """Assert that what mousflow reads of a processing set, with zarr alone (storage.processing_set_metadata) and
    with xarray (storage.partitions; neither imports xradio), is what xradio's own reader and accessors say."""
    from xradio.measurement_set import open_processing_set as xradio_open

    from mousflow.storage.partitions import open_checked, partition_infos
    from mousflow.storage.processing_set_metadata import read_metadata

    ps = xradio_open(str(loc.path))
    meta = read_metadata(loc)
    assert [m.info for m in meta] == partition_infos(open_checked(loc))
    for m in meta:
        node = ps[m.info.name]
        told = node.xr_ms.get_partition_info()
        assert (m.info.spw_name, m.info.field_names, m.info.intents) == (
            told["spectral_window_name"], sorted(str(f) for f in told["field_name"]), list(told["scan_intents"]))
        np.testing.assert_array_equal(m.antenna1_names, np.asarray(node.baseline_antenna1_name.values).astype(str))
        np.testing.assert_array_equal(m.antenna2_names, np.asarray(node.baseline_antenna2_name.values).astype(str))
        np.testing.assert_array_equal(m.frequency_hz, np.asarray(node.frequency.values, dtype=np.float64))
        fs = node.xr_ms.get_field_and_source_xds()
        names = [str(f) for f in fs.field_name.values]
        centres = np.asarray(fs["FIELD_PHASE_CENTER_DIRECTION"].values).reshape(len(names), -1)
        first: dict[str, tuple[float, float]] = {}
        for n, c in zip(names, centres, strict=True):
            first.setdefault(n, (float(c[0]), float(c[1])))
        assert m.field_centres == first


@pytest.fixture
def metadata_agrees_with_xradio():
    return _metadata_agrees_with_xradio


@pytest.fixture(scope="session")
def tiny_mous(tmp_path_factory):
    """A `tiny` MOUS (seed 1): the simulation result; its files must not be modified by tests."""
    return simulate_mous("tiny", str(tmp_path_factory.mktemp("sim") / "tiny"), seed=1)


CASA_MS_GENERATOR = Path(__file__).parent / "ingest" / "casa_simulated_ms.py"


def run_casa_ms_generator(workdir: Path, *args: str) -> str:
    """Run tests/ingest/casa_simulated_ms.py (CASA's simulator) in a process of its own; its stdout."""
    proc = subprocess.run([sys.executable, str(CASA_MS_GENERATOR), *args], capture_output=True, text=True,
                          cwd=workdir, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"casa_simulated_ms.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout


def make_casa_ms(workdir: Path, **spec) -> dict:
    """A Measurement Set made by CASA's simulator (see tests/ingest/casa_simulated_ms.py); returns its known
    sky, with the MS's path under "ms"."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {"out": str(workdir / "eb.ms"), **spec}
    (workdir / "spec.json").write_text(json.dumps(spec))
    truth = json.loads(run_casa_ms_generator(workdir, str(workdir / "spec.json")).strip().splitlines()[-1])
    truth["ms"] = spec["out"]
    return truth


@pytest.fixture(scope="session")
def casa_ms(tmp_path_factory):
    """An ALMA-like MS from CASA's simulator: XX/YY, bandpass, flux and phase calibrators, two point sources."""
    return make_casa_ms(tmp_path_factory.mktemp("casa-ms"), seed=1, n_antennas=10, correlations="XX YY",
                        flux_calibrator=True)


@pytest.fixture(scope="session")
def casa_mosaic_ms(tmp_path_factory):
    """A 3-pointing mosaic from CASA's simulator, every pointing a field named like the target (as ALMA names
    them); small (6 antennas, 4 channels): the tests refusing it read its metadata only."""
    return make_casa_ms(tmp_path_factory.mktemp("casa-mosaic"), seed=3, n_antennas=6, n_chan=4, target_scan_s=90,
                        mosaic_pointings=3)


@pytest.fixture(scope="session")
def casa_ms_generator():
    """casa_ms_generator(workdir, *args): run tests/ingest/casa_simulated_ms.py with these arguments."""
    return run_casa_ms_generator


@pytest.fixture(scope="session")
def casa_ms_circular(tmp_path_factory):
    """Another CASA-made MS: circular feeds with all four correlations (RR RL LR LL), no flux calibrator, and
    rows of one target baseline missing (the MSv4 converter pads them with NaN)."""
    return make_casa_ms(tmp_path_factory.mktemp("casa-ms-circular"), seed=2, n_antennas=10,
                        correlations="RR RL LR LL", flux_calibrator=False, drop_baseline_rows=True)


@pytest.fixture(scope="session")
def casa_ms_alma_band6(tmp_path_factory):
    """A realistic-enough ALMA execution block from CASA's simulator: all 43 antennas, band 6 (one 64-channel
    window of 2 GHz at 229 GHz), XX/YY, bandpass, flux and phase calibrators, two 5-minute target scans. The
    noise (0.018 Jy per visibility) puts the two point sources at ~2000 sigma in the continuum, the dynamic
    range of a 20-40 min band 6 observation of 30 mJy sources."""
    return make_casa_ms(tmp_path_factory.mktemp("casa-ms-band6"), seed=7, n_antennas=43, n_chan=64,
                        target_scan_s=300, phase_scans=2, windows=[["spw_230GHz", 229.0e9]], sigma_jy=0.018,
                        correlations="XX YY", flux_calibrator=True)


EXPECTED_NOISE = Path(__file__).parent / "ingest" / "expected_noise.py"


@pytest.fixture(scope="session")
def casa_expected_noise():
    """casa_expected_noise(workdir, ms=, field=, sigma_jy=, robust=, cell_arcsec=, npix=): the continuum noise
    CASA expects of the perfectly calibrated MS (tests/ingest/expected_noise.py, run in its own process)."""

    def run(workdir: Path, **spec) -> dict:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "expected.json").write_text(json.dumps({"workdir": str(workdir), **spec}))
        proc = subprocess.run([sys.executable, str(EXPECTED_NOISE), str(workdir / "expected.json")],
                              capture_output=True, text=True, cwd=workdir, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"expected_noise.py failed:\n{proc.stderr[-3000:]}", pytrace=False)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run
