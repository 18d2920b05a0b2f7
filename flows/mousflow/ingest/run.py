"""`mousflow import-ms`: Measurement Sets in, a MOUS out (MSv4 processing sets, mous.yaml), never half-done.

Layout written under the output location, the same as a simulated MOUS's:

    mous.yaml                 the MOUS manifest (placeholders where only the proposal knows the value)
    import.json               what each Measurement Set held (fields, intents, windows, antennas, dishes)
    eb/<eb label>.ps.zarr     one MSv4 processing set per Measurement Set (= execution block)
    _MOUSFLOW_COMMITTED       written last; without it the import is incomplete

Every Measurement Set is checked before anything is written, then converted into a local staging directory
(xradio's converter writes to a local path): on a local disk that directory is a sibling of the output and is
renamed into place at the end; for object storage it is uploaded and the commit marker written last. A failure
removes the staging directory and anything already uploaded.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import yaml

import mousflow
from mousflow.ingest.errors import ImportFailed
from mousflow.ingest.manifest import ImportOptions, build_manifest, describe, execution_block_uid
from mousflow.ingest.measurement_set import check_measurement_set, convert, target_fields
from mousflow.ingest.metadata import ExecutionBlockSummary, summarise
from mousflow.model.semantics import several_pointings
from mousflow.storage.location import Location, remove_local_tree
from mousflow.storage.zarr_io import finalize_processing_set, open_processing_set

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class ImportResult:
    out: Location
    manifest: Location
    execution_blocks: list[tuple[str, str]]
    placeholders: list[str]
    seconds: float


def eb_label(uid: str) -> str:
    """Archive-style name of an execution block: uid://A002/X1/X2 -> uid___A002_X1_X2."""
    return uid.replace("://", "___").replace("/", "_")


def import_measurement_sets(ms_paths: list[str], out: str, options: ImportOptions | None = None, *,
                            force: bool = False, progress: ProgressFn | None = None) -> ImportResult:
    """Convert each Measurement Set (one execution block each) and write a MOUS under `out` (path or s3://)."""
    say = progress or (lambda _msg: None)
    options = options or ImportOptions()
    started = time.perf_counter()
    if not ms_paths:
        raise ImportFailed("no Measurement Set given")
    ms_paths = [os.path.abspath(p).rstrip("/") for p in ms_paths]
    for ms in ms_paths:
        check_measurement_set(ms)
    if len(set(ms_paths)) != len(ms_paths):
        raise ImportFailed("the same Measurement Set is given twice")
    _refuse_mosaics_before_converting(ms_paths)

    final = Location.of(out)
    final.check_writable()
    if final.exists() and not final.is_empty() and not force:
        raise ImportFailed(f"{final.uri} already exists and is not empty (use --force to replace it)")

    if final.is_local:
        staging = f"{final.path}.partial-{os.getpid()}-{int(time.time())}"
    else:
        staging = tempfile.mkdtemp(prefix="mousflow-import-")
    uploaded = False
    try:
        os.makedirs(os.path.join(staging, "eb"), exist_ok=True)
        ebs: list[tuple[str, str, ExecutionBlockSummary]] = []
        for k, ms in enumerate(ms_paths):
            say(f"converting {k + 1}/{len(ms_paths)}: {ms}")
            t0 = time.perf_counter()
            converting = os.path.join(staging, "eb", f"_converting-{k}.ps.zarr")
            convert(ms, converting)
            finalize_processing_set(Location.of(converting))
            summary = summarise(open_processing_set(Location.of(converting)))
            if not summary.targets:
                intents = sorted({i for f in summary.fields for i in f.intents})
                raise ImportFailed(f"{ms}: no science target (no OBSERVE_TARGET scans; intents found: "
                                   f"{', '.join(intents) or 'none'}): nothing to image")
            # refused here, before anything is written, rather than by every later check
            _refuse_several_pointings([(ms, _target_fields(summary))])
            uid, synthesised = execution_block_uid(summary, ms, k)
            if any(uid == u for u, _, _ in ebs):
                raise ImportFailed(f"{ms}: execution block {uid} is already imported from another Measurement Set")
            label = eb_label(uid)
            os.replace(converting, os.path.join(staging, "eb", f"{label}.ps.zarr"))
            ebs.append((uid, final.join("eb", f"{label}.ps.zarr").uri, summary))
            say(f"  {uid}{' (UID made from the MS name, the MS has none)' if synthesised else ''}: "
                f"{summary.n_partitions} partitions, {len(summary.fields)} fields, {len(summary.windows)} windows, "
                f"{len(summary.antennas)} antennas, {time.perf_counter() - t0:.1f} s")

        _refuse_several_pointings([(u, _target_fields(s)) for u, _, s in ebs])
        doc, left = build_manifest(ebs, final, options)
        with open(os.path.join(staging, "mous.yaml"), "w") as fh:
            fh.write(describe(ebs, left) + yaml.safe_dump(doc, sort_keys=False))
        Location.of(os.path.join(staging, "import.json")).write_json({
            "mousflow": mousflow.__version__,
            "execution_blocks": [{"uid": u, "uri": uri, "measurement_set": ms, **s.to_json()}
                                 for (u, uri, s), ms in zip(ebs, ms_paths, strict=True)],
            "placeholders": left,
        })
        if final.is_local:
            if final.exists():
                shutil.rmtree(final.path)
            os.replace(staging, final.path)
        else:
            if force:
                final.remove()
            uploaded = True
            _upload(staging, final, say)
        final.commit({"kind": "imported-mous", "mousflow": mousflow.__version__, "measurementSets": ms_paths,
                      "executionBlocks": [u for u, _, _ in ebs]})
    except BaseException:
        if uploaded:
            try:
                final.remove()
            except Exception as exc:  # the missing commit marker already marks it incomplete
                say(f"could not remove the partial upload at {final.uri}: {exc}")
        raise
    finally:
        try:
            remove_local_tree(staging)
        except OSError as exc:
            say(f"could not remove the staging directory {staging}: {exc}")
    return ImportResult(final, final.join("mous.yaml"), [(u, uri) for u, uri, _ in ebs], left,
                        time.perf_counter() - started)


def _refuse_mosaics_before_converting(ms_paths: list[str]) -> None:
    """The pointing checks made on the converted sets below, made first from the Measurement Sets' own tables
    when they tell (measurement_set.target_fields): a mosaic is refused without a conversion."""
    read = [(ms, target_fields(ms)) for ms in ms_paths]
    _refuse_several_pointings([(ms, fields) for ms, fields in read if fields], across=all(f for _, f in read))


def _refuse_several_pointings(blocks: list[tuple[str, list[tuple[str, tuple[float, float]]]]], *,
                              across: bool = True) -> None:
    """ImportFailed when one block's (label, target fields) are a mosaic, or (`across`) the blocks together are
    more than one pointing."""
    for label, fields in blocks:
        mosaic = several_pointings(fields)
        if mosaic:
            raise ImportFailed(f"{label}: {mosaic}")
    apart = several_pointings([(f"{name} of {label}", c) for label, fields in blocks for name, c in fields]) \
        if across else None
    if apart:
        raise ImportFailed(f"the Measurement Sets do not observe one pointing: {apart}")


def _target_fields(summary: ExecutionBlockSummary) -> list[tuple[str, tuple[float, float]]]:
    return [(f.name, (math.radians(f.ra_deg), math.radians(f.dec_deg))) for f in summary.targets]


def _upload(staging: str, final: Location, say: ProgressFn) -> None:
    files = [os.path.join(d, f) for d, _, names in os.walk(staging) for f in names]
    total = sum(os.path.getsize(f) for f in files)
    say(f"uploading {len(files)} files ({total / 2**20:.1f} MiB) to {final.uri}")
    for path in files:
        rel = os.path.relpath(path, staging)
        final.fs.put_file(path, final.join(*rel.split(os.sep)).path)
