"""The checks a MOUS's inputs pass before anything is processed.

`mousflow validate`, `mousflow run` (before it starts anything), the operator (before a MOUS becomes
ReadyForProcessing) and the calibration stage (before it reads) all run these, so a bad input is refused the
same way wherever it is found: one classified error whose message says what to fix. Cheapest first:

1. the spec: its semantics (`check_spec_semantics`: band against the representative frequency, dates in the
   future, duplicate UIDs, `..` in locations, output or delivery locations overlapping an input), and the
   overlap again with symbolic links resolved;
2. each execution block: a processing set by its layout (`check_layout`: stat and zarr.json only, so a named
   pipe or a device is never opened); with `verify`, every object read back against the checksums recorded
   when it was written; then its metadata: science target scans, enough antennas with baselines between them,
   target windows inside the declared band, for calibrate+image bandpass and phase calibrator scans in
   every window, and the target fields at one phase centre. These read the metadata with zarr alone
   (storage.processing_set_metadata), so the operator checks inputs without loading xarray; a stage that
   reads the data opens the set with xarray too (`open_data`), which refuses a store it cannot read;
3. across execution blocks: no two hold the same data (the same content digest, taken from the recorded
   checksums when there are some, so without reading the data), and the target is at one pointing (a
   mosaic, within an execution block or across them, is refused: it is not imaged yet).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mousflow.errors import InputMissing, InvalidInput
from mousflow.model import MOUSSpec, Recipe, check_spec_semantics
from mousflow.model.semantics import location_overlaps, outside_band, several_pointings, uri_fields
from mousflow.stages.intents import ROLES, has_role
from mousflow.storage.integrity import DamagedData, content_digest, recorded_checksums, tree_digest, verify_checksums
from mousflow.storage.location import Location
from mousflow.storage.processing_set_metadata import PartitionInfo, PartitionMetadata, check_layout, read_metadata

if TYPE_CHECKING:
    import xarray as xr

# Antenna-based calibration solves one gain per antenna from the baselines between them: with fewer than
# three antennas it is not determined. Imaging alone needs one baseline.
MIN_ANTENNAS = {Recipe.CALIBRATE_IMAGE: 3, Recipe.IMAGE_ONLY: 2}


@dataclass
class CheckedBlock:
    """An execution block that passed the checks, opened."""

    uid: str
    uri: str
    digest: str
    """Content digest of the processing set (the same data gives the same digest, wherever it is stored)."""
    verified: bool
    """Every object was read back and matched the checksums recorded when it was written."""
    ps: xr.DataTree | None
    """The processing set opened with xarray, or None when the check was asked for metadata only."""
    infos: list[PartitionInfo]
    target_fields: list[tuple[str, tuple[float, float]]]
    """(name, phase centre) of its target fields: one pointing (several are refused)."""


def check_spec(spec: MOUSSpec) -> None:
    """Step 1: the spec alone, without reading any data."""
    problems = check_spec_semantics(spec)
    uris = uri_fields(spec)
    if not problems:
        resolved = [(field, _resolved(uri)) for field, uri in uris.inputs]
        problems = location_overlaps(resolved, [(field, _resolved(uri)) for field, uri in uris.outputs])
    if problems:
        raise InvalidInput("; ".join(map(str, problems)))


def _resolved(uri: str) -> str:
    """A local location with symbolic links resolved (a link must not hide that an output is an input)."""
    loc = Location.of(uri)
    return os.path.realpath(loc.path) if loc.is_local else loc.uri


def check_execution_block(spec: MOUSSpec, index: int, *, verify: bool, open_data: bool = True) -> CheckedBlock:
    """Step 2 for spec.executionBlocks[index]; `open_data=False` checks the metadata only (the operator)."""
    eb = spec.execution_blocks[index]
    loc = Location.of(eb.uri)
    where = f"execution block {eb.uid}"
    try:
        check_layout(loc)
        verified = verify_checksums(loc, where) if verify else None
        recorded = verified if verified is not None else recorded_checksums(loc)
        digest = tree_digest(recorded) if recorded is not None else content_digest(loc)
        partitions = read_metadata(loc)
        ps = None
        if open_data:
            from mousflow.storage.partitions import open_checked  # xarray, for the stages only

            ps = open_checked(loc)
    except (InvalidInput, InputMissing) as exc:  # the data's own problems; Unavailable passes through as it is
        if str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from exc
    targets = _check_contents(spec, eb.uid, partitions)
    return CheckedBlock(eb.uid, eb.uri, digest, verified is not None, ps, [p.info for p in partitions], targets)


def _check_contents(spec: MOUSSpec, uid: str,
                    partitions: list[PartitionMetadata]) -> list[tuple[str, tuple[float, float]]]:
    """The checks of one execution block's metadata; returns its target fields (one pointing)."""
    where = f"execution block {uid}"
    infos = [p.info for p in partitions]
    targets = [p for p in partitions if has_role(p.info.intents, "target")]
    if not targets:
        intents = sorted({x for i in infos for x in i.intents})
        raise InvalidInput(f"{where}: no science target (OBSERVE_TARGET) scans, only {', '.join(intents) or 'none'}:"
                           f" nothing to image")
    antennas, observing = set(), set()
    for t in targets:
        a1, a2 = t.antenna1_names, t.antenna2_names
        cross = a1 != a2
        antennas |= set(a1[cross]) | set(a2[cross])
        observing |= set(a1) | set(a2)
    need = MIN_ANTENNAS[spec.recipe]
    if not antennas:
        raise InvalidInput(f"{where}: no baselines between different antennas on the target (antennas: "
                           f"{', '.join(sorted(observing)) or 'none'}); {spec.recipe.value} needs at least {need}")
    if len(antennas) < need:
        raise InvalidInput(f"{where}: only {len(antennas)} antennas ({', '.join(sorted(antennas))}) form baselines "
                           f"on the target; {spec.recipe.value} needs at least {need}")
    for t in targets:
        freq = t.frequency_hz
        mismatch = outside_band(float((freq.min() + freq.max()) / 2), spec.band) if freq.size else None
        if mismatch:
            raise InvalidInput(f"{where}, window {t.info.spw_name}: {mismatch}: spec.band {spec.band} contradicts "
                               f"the data")
    if spec.recipe == Recipe.CALIBRATE_IMAGE:
        for spw in sorted({t.info.spw_name for t in targets}):
            in_spw = [i for i in infos if i.spw_name == spw]
            for role in ("bandpass", "phase"):
                if not any(has_role(i.intents, role) for i in in_spw):
                    raise InvalidInput(f"{where}, {spw}: no {ROLES[role]} scans to calibrate with")
    fields: dict[str, tuple[float, float]] = {}
    for t in targets:  # each field once, at its first partition's centre
        for name, centre in t.field_centres.items():
            if name in t.info.field_names:
                fields.setdefault(name, centre)
    mosaic = several_pointings(list(fields.items()))
    if mosaic:
        raise InvalidInput(f"{where}: {mosaic}")
    return list(fields.items())


def pointing_across_blocks(blocks: list[tuple[str, list[tuple[str, tuple[float, float]]]]]) -> str | None:
    """Why execution blocks (uid, target fields) that are each one pointing are not all the same one."""
    why = several_pointings([(f"{name} of {uid}", centre) for uid, fields in blocks for name, centre in fields])
    return f"the execution blocks do not observe one pointing: {why}" if why else None


def check_inputs(spec: MOUSSpec, *, verify: bool) -> list[CheckedBlock]:
    """Every check, in order; returns the execution blocks opened. `verify` reads every byte of every
    execution block against its recorded checksums (the calibration stage reads them all anyway; a check
    before a run can leave that to it)."""
    check_spec(spec)
    blocks = [check_execution_block(spec, i, verify=verify) for i in range(len(spec.execution_blocks))]
    seen: dict[str, CheckedBlock] = {}
    for block in blocks:
        first = seen.setdefault(block.digest, block)
        if first is not block:
            raise InvalidInput(f"execution blocks {first.uid} and {block.uid} hold the same data ({first.uri} and "
                               f"{block.uri}): list each execution block once")
    apart = pointing_across_blocks([(b.uid, b.target_fields) for b in blocks])
    if apart:
        raise InvalidInput(apart)
    return blocks


@contextlib.contextmanager
def verified_meanwhile(spec: MOUSSpec) -> Iterator[None]:
    """Every execution block read back against its recorded checksums on a thread of its own while the block
    runs (a stage reading and working on the data), waited for as it ends: a damaged block raises DamagedData
    there, before the stage commits anything. Work that fails before then on damaged data (a chunk that does not
    decode) is reported as the damage, the clearer message.

    Why not first, as check_inputs(verify=True) does: hashing reads every byte once, the full-size corpus
    block's 3.4 GB in ~1.3 s from the page cache (~5 s with the sha256 records of before), while calibration,
    which reads the data anyway, keeps about 1.2 of 2 cores busy.
    The spec is checked before anything is read; each block's layout before its objects are opened (a named
    pipe is never read), as in check_execution_block."""
    check_spec(spec)
    failure: list[BaseException] = []

    def verify() -> None:
        try:
            for eb in spec.execution_blocks:
                loc = Location.of(eb.uri)
                check_layout(loc)
                verify_checksums(loc, f"execution block {eb.uid}")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=verify, name="verify-inputs", daemon=True)
    thread.start()
    try:
        yield
    except Exception as exc:
        thread.join()
        if failure and isinstance(failure[0], DamagedData):
            raise failure[0] from exc
        raise
    thread.join()
    if failure:
        raise failure[0]
