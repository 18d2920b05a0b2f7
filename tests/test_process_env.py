"""The process's allocator (process_env.release_freed_memory) and its compute threads (use_compute_threads)."""

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mousflow import process_env

REPO = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    # 64 KiB arrays come from glibc's heap (below its mmap threshold); every second one kept, so the freed half
    # is in holes between live blocks, which glibc does not return to the system by itself
    arrays = [np.ones(8192) for _ in range(4096)]  # 256 MiB
    del arrays[::2]
    before = _rss_bytes()
    assert process_env.release_freed_memory() is True
    after = _rss_bytes()
    assert before - after > 64 * 2**20, (before, after)
    assert sum(a.sum() for a in arrays) == 2048 * 8192  # what is live is untouched


def test_without_glibc_nothing_is_released(monkeypatch):
    monkeypatch.setattr(process_env, "_libc_malloc_trim", lambda: None)
    assert process_env.release_freed_memory() is False


def test_a_stage_process_runs_without_the_libraries_it_never_uses():
    # a fresh interpreter, as a stage pod's: its imports (xarray, hence pandas) must work with pyarrow made
    # unimportable, pandas' strings too, and leave it unloaded
    code = textwrap.dedent("""
        import sys
        from mousflow import process_env
        process_env.keep_unused_libraries_out()
        import numpy as np, pandas as pd, xarray as xr
        import mousflow.stages.calibration, mousflow.stages.packaging
        frame = pd.DataFrame({"spw": ["ALMA_RB_03#BB_1#SW-01#FULL_RES", "x"]})
        assert frame.spw.str.contains("#").tolist() == [True, False]
        ds = xr.Dataset(coords={"antenna_name": ["DA41", "DV02"]})
        assert ds.sel(antenna_name="DV02").antenna_name.item() == "DV02"
        assert sys.modules["pyarrow"] is None, "pyarrow was imported"
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_library_already_imported_is_left_alone(monkeypatch):
    import xarray  # noqa: F401  (brings pandas, and pyarrow where it is installed)

    before = sys.modules.get("pyarrow", "absent")
    monkeypatch.setattr(process_env, "NOT_IMPORTED_IN_STAGES", ("pyarrow",))
    process_env.keep_unused_libraries_out()
    if before != "absent":
        assert sys.modules["pyarrow"] is before
    else:
        assert sys.modules.pop("pyarrow") is None


def test_the_stage_command_keeps_them_out_before_the_stage_is_imported(monkeypatch):
    from mousflow import cli
    from mousflow.stages import runner

    calls = []
    monkeypatch.setattr(process_env, "keep_unused_libraries_out", lambda: calls.append("kept out"))
    monkeypatch.setattr(runner, "run_stage", lambda *a, **k: calls.append("stage") or runner.StageOutcome(
        stage="calibration", state="Succeeded"))
    monkeypatch.setattr(cli, "_exit_on_sigterm", lambda: None)
    assert cli.main(["stage", "calibration", "--manifest", "m.yaml"]) == 0
    assert calls == ["kept out", "stage"]


_DEGRID = """
import hashlib, sys
import numpy as np
from mousflow.process_env import use_compute_threads
from mousflow.science.imaging.gridding import degrid_model
rng = np.random.default_rng(1)
uvw = rng.normal(0, 300, (7200, 3)) * [1, 1, 0.1]
model = np.zeros((400, 400)); model[rng.integers(0, 400, 50), rng.integers(0, 400, 50)] = rng.random(50)
degrid_model(model[:64, :64], uvw[:10], [2.3e11], 1.16e-6, nthreads=2)  # ducc0's pool made here, from the env
if sys.argv[1] == "sized":
    use_compute_threads(2)
vis = degrid_model(model, uvw, np.linspace(2.3e11, 2.32e11, 7), 1.16e-6, double=False, nthreads=2)
print(hashlib.sha256(vis.tobytes()).hexdigest())
"""


def test_imaging_uses_its_threads_whatever_omp_num_threads_said_when_ducc0_started():
    """A local Dask cluster's nanny leaves OMP_NUM_THREADS=1 in the stage's environment; ducc0 then made a
    one-thread pool and degridded differently (and slower) than an uninterrupted run, so a resumed run's
    continuum differed in its last bits (seen on this machine in the SIGKILL-resume test)."""
    def degridded(omp: str, how: str) -> str:
        env = {**os.environ, "OMP_NUM_THREADS": omp, "PYTHONPATH": os.pathsep.join([str(REPO / "flows")])}
        return subprocess.run([sys.executable, "-c", _DEGRID, how], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    assert degridded("1", "sized") == degridded("2", "sized")
    # and the environment did matter: the pool, left as made, degrids otherwise
    assert degridded("1", "as-made") != degridded("2", "as-made")
