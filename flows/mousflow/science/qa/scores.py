"""Stage scores in [0, 1] and the colours the weblog shows them in (the ALMA pipeline's scale)."""

from __future__ import annotations

COLOURS = (("green", 0.9), ("blue", 0.66), ("yellow", 0.33))


def score_colour(score: float | None) -> str:
    """green >= 0.9, blue >= 0.66, yellow >= 0.33, else red (also for a missing score)."""
    if score is None or score != score:  # None or NaN
        return "red"
    for colour, floor in COLOURS:
        if score >= floor:
            return colour
    return "red"


def ratio_score(ratio: float, good: float, bad: float) -> float:
    """1 at or below `good`, 0 at or above `bad`, linear between (for ratios where lower is better)."""
    if ratio != ratio:
        return 0.0
    if ratio <= good:
        return 1.0
    if ratio >= bad:
        return 0.0
    return (bad - ratio) / (bad - good)
