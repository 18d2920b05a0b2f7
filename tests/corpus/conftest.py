"""The corpus's modules (cases, cache, processing, measure) and the import tests' helpers (imported_sky) are
imported by their plain names, as tests/ingest's are from its own directory."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent / "ingest")]
