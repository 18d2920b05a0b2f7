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

from mousflow.ingest.errors import ImportFailed, MeasurementSetMissing

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
                                           with_pointing=False, persistence_mode="w-", parallel_mode="none")
    except ImportError as exc:
        raise ImportFailed(f"{ms_path}: reading Measurement Sets needs xradio's casacore backend (arcae): "
                           f"{exc}") from exc
    except Exception as exc:  # the converter and the table reader raise many types for a damaged MS
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFailed(f"{ms_path}: the MSv4 converter failed ({type(exc).__name__}: {text})") from exc
