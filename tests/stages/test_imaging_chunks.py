"""A cube chunk as an imaging worker runs it: unpickled in a fresh process, it reads its channels from the
partitions' Zarr arrays and writes its slab and checkpoint without importing xarray, pandas, pyarrow or astropy
(~0.13 GB of a worker's resident memory at full size), and makes the planes the stage's own process makes."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
from calibrated_target import target_processing_set

# Imported by the stage's own process (opening processing sets, writing FITS headers), never by a worker.
NOT_IN_A_WORKER = ("xarray", "pandas", "pyarrow", "astropy", "dask.array")

WORKER = """
import json, pickle, sys
import distributed  # a worker process has it, whatever it runs
with open(sys.argv[1], "rb") as fh:
    fn, args = pickle.load(fh)
result = fn(*args)
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in {"xarray", "pandas", "pyarrow",
                                                                               "astropy", "dask"}),
                  "rms": result["metrics"]["rms"]}))
"""


def test_a_worker_images_a_chunk_without_the_stage_process_libraries(tmp_path):
    from mousflow.science.imaging import plan_image
    from mousflow.stages import imaging
    from mousflow.stages.image_store import CUBE_PRODUCTS, ImageStore
    from mousflow.stages.imaging_chunks import CubeChunk, image_cube_chunk, image_window_channels
    from mousflow.storage.checkpoints import CheckpointStore
    from mousflow.storage.location import Location

    class Context:  # the part of StageContext _windows uses
        def path(self, *parts):
            return Location.of(tmp_path).join(*parts)

    rels = [target_processing_set(tmp_path, f"eb{k}", seed=k, n_time=9, n_chan=24) for k in (1, 2)]
    (window,) = imaging._windows(Context(), rels)
    _, weight, flag = window.load()
    plan = plan_image(window.uvw_m, window.freq_hz, window.dish_diameter_m, weight=weight, flag=flag, robust=0.5)
    store = ImageStore(Location.of(tmp_path / "cube.zarr"))
    store.create(CUBE_PRODUCTS, window.freq_hz.size, plan.npix, 8, {})
    task = CubeChunk(run_root_uri=Location.of(tmp_path / "run").uri, cube_uri=store.loc.uri,
                     key="imaging/cube_x/chunk-000008-000016", spw=window.spw, c0=8, c1=16, input_hash="h",
                     code_version="v", uid="uid://A001/X1/X1")
    with open(tmp_path / "task.pickle", "wb") as fh:
        pickle.dump((image_cube_chunk, (task, window, plan)), fh)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "task.pickle")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = [m for m in report["modules"] if any(m == n or m.startswith(n + ".") for n in NOT_IN_A_WORKER)]
    assert loaded == [], loaded

    # the worker's planes are the ones this process makes for the same channels
    expected = image_window_channels(window, plan, 8, 16)
    for name in CUBE_PRODUCTS:
        np.testing.assert_array_equal(store.read(name)[8:16], getattr(expected, name))
    np.testing.assert_array_equal(report["rms"], expected.image_rms)
    assert np.isfinite(expected.image_rms).all()
    checkpoint = CheckpointStore(Location.of(tmp_path / "run")).location(task.key).read_json()
    assert checkpoint["outputs"] == store.slab_digests(8, 16, CUBE_PRODUCTS)
