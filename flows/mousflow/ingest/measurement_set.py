"""Recognising a CASA Measurement Set (MSv2) on disk and converting it with xradio's converter.

A CASA table is a directory with `table.dat` and `table.info`, whose first line names the table's type; a
Measurement Set says `Type = Measurement Set` there and has ANTENNA, FIELD, SPECTRAL_WINDOW and
DATA_DESCRIPTION sub-tables. Checking this first turns "not an MS" into a clear message instead of an error
from deep inside the table reader.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from mousflow.ingest.errors import ImportFailed, MeasurementSetMissing
from mousflow.storage.zarr_io import visibility_chunks

REQUIRED_SUBTABLES = ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "DATA_DESCRIPTION", "POLARIZATION")
# One MSv4 partition per field (and, as the converter always does, per spectral window, polarisation setup and
# scan intent): calibrators and the target never share a partition, as in the ALMA pipeline's own practice.
PARTITION_SCHEME = ["FIELD_ID"]


def check_measurement_set(path: str) -> None:
    """Raise ImportFailed, saying why, unless `path` is a readable CASA Measurement Set."""
    if not os.path.exists(path):
        raise MeasurementSetMissing(f"{path}: no such Measurement Set")
    if not os.path.isdir(path):
        raise ImportFailed(f"{path}: not a Measurement Set (a Measurement Set is a directory, this is a file)")
    info = os.path.join(path, "table.info")
    if not os.path.isfile(os.path.join(path, "table.dat")) or not os.path.isfile(info):
        raise ImportFailed(f"{path}: not a Measurement Set (no CASA table here: table.dat/table.info missing)")
    with open(info, errors="replace") as fh:
        first = fh.readline().strip()
    kind = first.split("=", 1)[1].strip() if "=" in first else first
    if kind != "Measurement Set":
        raise ImportFailed(f"{path}: not a Measurement Set (a CASA table of type {kind!r})")
    missing = [t for t in REQUIRED_SUBTABLES if not os.path.isfile(os.path.join(path, t, "table.dat"))]
    if missing:
        raise ImportFailed(f"{path}: incomplete Measurement Set, sub-table(s) missing: {', '.join(missing)}")


def target_fields(path: str) -> list[tuple[str, tuple[float, float]]] | None:
    """The science target's fields of a Measurement Set, (name, phase centre (RA, Dec) radians), read from its
    FIELD and STATE tables and the distinct (field, state) pairs of its rows, without converting it: a mosaic is
    refused in a second instead of after a conversion (30 s for the test corpus's, minutes at full size). None
    when that cannot be told from the tables (no intents recorded, or tables the converter is left to judge).
    A name given to several fields gets the field's number, as the converter does."""
    try:
        from arcae import table
        from arcae.lib.arrow_tables import Table
    except ImportError:
        return None
    try:
        opened = [table(f"{path}::FIELD"), table(f"{path}::STATE"),
                  Table.from_taql(f'SELECT DISTINCT FIELD_ID, STATE_ID FROM "{path}"')]
    except Exception:  # anything the table reader refuses is the converter's to report
        return None
    try:
        fields, states, pairs = opened
        if states.nrow() == 0:
            return None
        names = [str(n) for n in fields.getcol("NAME")]
        centres = np.asarray(fields.getcol("PHASE_DIR"), dtype=np.float64).reshape(len(names), -1, 2)[:, 0, :]
        modes = [str(m) for m in states.getcol("OBS_MODE")]
        used = zip(np.asarray(pairs.getcol("FIELD_ID")), np.asarray(pairs.getcol("STATE_ID")), strict=True)
        ids = sorted({int(f) for f, st in used if 0 <= st < len(modes) and "OBSERVE_TARGET" in modes[st]
                      and 0 <= f < len(names)})
    except Exception:
        return None
    finally:
        for t in opened:
            t.close()
    repeated = {n for n in names if names.count(n) > 1}
    return [(f"{names[i]}_{i}" if names[i] in repeated else names[i], (float(centres[i, 0]), float(centres[i, 1])))
            for i in ids]


def converter_chunks(path: str) -> dict[str, int] | None:
    """The chunks the converter is asked for: time chunks of about TARGET_CHUNK_BYTES of the widest window's
    visibilities, frequency in slabs of CHANNELS_PER_CHUNK, the layout the stages write theirs in. The
    converter's own default (time chunks of ~128 MiB) is larger than a stage's block of integrations (calibration
    applies 64 MiB at a time), so blocks straddled its chunks and each chunk was decompressed several times (a
    full-size 480-channel window read 4.2 times over in the calibration stage). Read from the SPECTRAL_WINDOW,
    POLARIZATION and ANTENNA tables (baselines counted with autocorrelations); None when they cannot be read
    (the converter's default then)."""
    try:
        from arcae import table
    except ImportError:
        return None
    opened = []
    try:
        for name in ("SPECTRAL_WINDOW", "POLARIZATION", "ANTENNA"):
            opened.append(table(f"{path}::{name}"))
        spw, pol, antennas = opened
        n_chan = int(np.max(np.asarray(spw.getcol("NUM_CHAN"))))
        n_corr = int(np.max(np.asarray(pol.getcol("NUM_CORR"))))
        n_ant = antennas.nrow()
    except Exception:  # anything the table reader refuses is the converter's to report
        return None
    finally:
        for t in opened:
            t.close()
    # the stages' own chunking of a partition as long as any, of the widest window with every baseline
    time, _, channels, _ = visibility_chunks((2**62, n_ant * (n_ant + 1) // 2, n_chan, n_corr))
    return {"time": time, "frequency": channels}


def _quiet_converter_log() -> None:
    """xradio logs every partition at INFO through toolviper's logger, to stdout; the importer reports its own
    progress, so only the converter's errors are let through."""
    try:
        from toolviper.utils.logger import get_logger
    except ImportError:
        return
    get_logger().setLevel(logging.ERROR)


def convert(ms_path: str, out_path: str) -> None:
    """Convert one MS into a processing set at `out_path` (local, must not exist) with xradio's converter."""
    from xradio.measurement_set import convert_msv2_to_processing_set

    _quiet_converter_log()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_msv2_to_processing_set(ms_path, out_path, partition_scheme=PARTITION_SCHEME,
                                           main_chunksize=converter_chunks(ms_path), with_pointing=False,
                                           persistence_mode="w-", parallel_mode="none")
    except ImportError as exc:
        raise ImportFailed(f"{ms_path}: reading Measurement Sets needs xradio's casacore backend (arcae): "
                           f"{exc}") from exc
    except Exception as exc:  # the converter and the table reader raise many types for a damaged MS
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFailed(f"{ms_path}: the MSv4 converter failed ({type(exc).__name__}: {text})") from exc
