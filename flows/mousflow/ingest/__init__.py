"""Real data in: CASA Measurement Sets (MSv2) converted to MSv4 processing sets with xradio's converter, plus a
MOUS manifest made from their metadata (`mousflow import-ms`)."""

from mousflow.ingest.run import ImportResult, import_measurement_sets

__all__ = ["ImportResult", "import_measurement_sets"]
