"""`mousflow report`: the KPI per month as an HTML page with PNG plots, from the cluster's MOUSs or the history.

Two sources of the same facts (mousflow.kpi.MOUSFacts): the MOUS resources a cluster holds (their status, as
the operator keeps it: deadline, phase, when they were delivered), or the delivery records the operator adds to
the history store (MOUSFLOW_HISTORY) when a MOUS is delivered, which outlive the resources but know nothing of
MOUSs not yet delivered (so no overdue column from them). The page: the KPI table (per month: delivered, within
the deadline %, median and 90th-percentile days to delivery, overdue) and, per month, a histogram of days to
delivery with the 30-day line.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from mousflow.errors import InvalidInput
from mousflow.kpi import (
    DEADLINE_DAYS,
    TARGET_FRACTION,
    MOUSFacts,
    days_to_delivery_by_month,
    facts_from_status,
    monthly_table,
    parse_time,
)
from mousflow.model import MOUSStatus

MANUAL_WORK = "mousflow.io/manual-work"


def facts_from_resources(items: Iterable[dict]) -> list[MOUSFacts]:
    """KPI facts of MOUS resources as the API returns them (a MOUS without fullyObservedAt is skipped)."""
    out = []
    for item in items:
        spec, meta = item.get("spec") or {}, item.get("metadata") or {}
        if not spec.get("fullyObservedAt"):
            continue
        status = MOUSStatus.from_stored(item.get("status") or {})
        manual = (meta.get("annotations") or {}).get(MANUAL_WORK) == "true"
        out.append(facts_from_status(f"{meta.get('namespace')}/{meta.get('name')}", parse_time(spec["fullyObservedAt"]),
                                     status, manual_work=manual))
    return out


def facts_from_deliveries(records: Iterable) -> list[MOUSFacts]:
    """KPI facts of the history's delivery records (pipeline.history.DeliveryRecord)."""
    return [MOUSFacts(r.key, "Delivered", parse_time(r.fully_observed_at), parse_time(r.deadline),
                      parse_time(r.delivered_at)) for r in records]


def _histogram_png(month: str, days: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    top = max(60.0, max(days) + 1)
    ax.hist(days, bins=[float(b) for b in range(0, int(top) + 2, 2)], color="#4a7ebb", edgecolor="white")
    ax.axvline(DEADLINE_DAYS, color="#c0392b", linestyle="--", label=f"{DEADLINE_DAYS} days")
    ax.set_xlabel("days from Fully Observed to Delivered")
    ax.set_ylabel("MOUSs")
    ax.set_title(f"{month}: {len(days)} delivered")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def write_report(facts: list[MOUSFacts], out: Path, now: datetime, source: str) -> Path:
    """index.html and one PNG per month under `out`; returns the page's path."""
    if not facts:
        raise InvalidInput(f"no MOUSs to report on in {source}")
    out.mkdir(parents=True, exist_ok=True)
    rows = monthly_table(facts, now)
    target = 100 * TARGET_FRACTION
    table = []
    for r in rows:
        low = r.within_deadline_percent is not None and r.within_deadline_percent < target
        table.append(f"<tr><td>{r.month}</td><td>{r.delivered}</td>"
                     f"<td class='{'miss' if low else 'ok'}'>{_cell(r.within_deadline_percent)}</td>"
                     f"<td>{_cell(r.median_days)}</td><td>{_cell(r.p90_days)}</td><td>{r.overdue}</td></tr>")
    plots = []
    for month, days in days_to_delivery_by_month(facts).items():
        name = f"days-to-delivery-{month}.png"
        _histogram_png(month, days, out / name)
        plots.append(f"<figure><img src='{name}' alt='days to delivery, {month}'><figcaption>{month}"
                     f"</figcaption></figure>")
    page = out / "index.html"
    page.write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mousflow KPI report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}.miss{{background:#f5b7b1}}.ok{{background:#d5f5e3}}
figure{{display:inline-block;margin:1em}}</style></head><body>
<h1>Processing KPI</h1>
<p>Source: {html.escape(source)}; {len(facts)} MOUSs; generated {now.isoformat(timespec="seconds")}.
Target: {target:.0f} % of MOUSs delivered within their deadline ({DEADLINE_DAYS} days after Fully Observed,
45 with manual work).</p>
<table><tr><th>month</th><th>delivered</th><th>within deadline %</th><th>median days</th><th>90th pct days</th>
<th>overdue</th></tr>
{chr(10).join(table)}
</table>
<p>Delivered MOUSs count in the month they were delivered; overdue ones in the month their deadline passed.</p>
<h2>Days to delivery, per month</h2>
{chr(10).join(plots) or "<p>No MOUS delivered yet.</p>"}
</body></html>
""")
    return page
