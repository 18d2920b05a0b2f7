"""Working through (time, baseline, channel, correlation) arrays a bounded number of samples at a time.

A full-size window's arrays are hundreds of MB; an expression over a whole one makes intermediates of its size
(complex128, twice the complex64 data). Kernels whose result for a (time, baseline) row depends on that row
alone loop over these chunks instead, and give the same bits as the expression over the whole array.
"""

from __future__ import annotations

from collections.abc import Iterator

# Samples (time x baseline x channel x correlation) per chunk: a complex128 intermediate of one is 8 MiB,
# whatever the window's width. (Counted in rows, as applying did before, a chunk of a 480-channel window was the
# calibration stage's whole 64 MiB block: five intermediates of 128 MiB each, per thread.)
SAMPLES_PER_CHUNK = 2**19


def sample_chunks(n_time: int, n_bl: int, per_row: int) -> Iterator[tuple[slice, slice]]:
    """(time slice, baseline slice) pairs covering (n_time, n_bl) in order, each of at most SAMPLES_PER_CHUNK
    samples (a row is one baseline's per_row channels x correlations), or one row where a row is more: whole
    integrations while they fit, else part of one integration's baselines."""
    rows = max(1, SAMPLES_PER_CHUNK // max(1, per_row))
    if rows >= n_bl:
        step = rows // n_bl
        for t0 in range(0, n_time, step):
            yield slice(t0, min(n_time, t0 + step)), slice(0, n_bl)
    else:
        for t0 in range(n_time):
            for b0 in range(0, n_bl, rows):
                yield slice(t0, t0 + 1), slice(b0, min(n_bl, b0 + rows))
