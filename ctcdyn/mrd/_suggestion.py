"""A monitoring suggestion for the patient report, from a lead-time simulation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._leadtime import LeadTimeResult
from ._schedule import MonitoringSchedule

if TYPE_CHECKING:
    from ..report import MonitoringSuggestion

_DAYS_PER_YEAR = 365.25


def describe_schedule(schedule: MonitoringSchedule) -> str:
    """A schedule in words, e.g. "7.5 mL CellSearch test at 04:00 every 30 days for 5 years
    (positive at >= 1 CTC)"."""
    hours = int(schedule.clock_hour)
    minutes = round(60 * (schedule.clock_hour - hours))
    years = schedule.horizon_days / _DAYS_PER_YEAR
    return (
        f"{schedule.volume:g} mL {schedule.assay_spec.name} test at {hours:02d}:{minutes:02d} "
        f"every {schedule.interval_days:g} days for {years:.3g} years "
        f"(positive at >= {schedule.threshold} CTC)"
    )


def monitoring_suggestion(
    result: LeadTimeResult, *, schedule: int = 0, level: float = 0.9, source: str = ""
) -> MonitoringSuggestion:
    """The report's :class:`~ctcdyn.report.MonitoringSuggestion` for one simulated schedule.

    The lead-time band holds the central ``level`` of the simulated lead times among relapses
    that a positive test preceded (over virtual patients, or over one patient's posterior when
    the simulation drew from it); the rationale gives the other schedules' numbers, so the
    reader sees what was compared.

    Args:
        result: a :func:`~ctcdyn.mrd.lead_time` result.
        schedule: index of the suggested schedule in ``result.schedules``.
        level: central probability of the lead-time band.
        source: where the virtual patients came from, in words (shown in the rationale).

    Raises:
        ValueError: no simulated relapse was preceded by a positive test under that schedule.
    """
    from ..report import MonitoringSuggestion

    table = result.summary()
    row = table.iloc[schedule]
    lead = result.patients["lead_days"].isel(schedule=schedule).values
    lead = lead[np.isfinite(lead)]
    if lead.size == 0:
        raise ValueError(
            f"no simulated relapse was preceded by a positive test under {table.index[schedule]!r}"
            f" ({result.n_patients} virtual patients): no lead time to report; simulate more"
        )
    lower, median, upper = np.quantile(lead, [(1 - level) / 2, 0.5, (1 + level) / 2])
    others = [
        f"{label}: P(positive before imaging) {r['p_detect_before_imaging']:.0%}, "
        f"{r['false_positives_per_year']:.2f} false positives per year"
        for j, (label, r) in enumerate(table.iterrows())
        if j != schedule
    ]
    rationale = (
        f"Simulated for {result.n_patients} virtual patients"
        + (f" ({source})" if source else "")
        + f"; P(positive before imaging) {row['p_detect_before_imaging']:.0%} "
        f"(± {row['p_detect_before_imaging_se']:.0%} Monte-Carlo error)."
        + (f" Compared with {'; '.join(others)}." if others else "")
    )
    return MonitoringSuggestion(
        schedule=describe_schedule(result.schedules[schedule]),
        lead_time_days_median=float(median),
        lead_time_days_lower=float(lower),
        lead_time_days_upper=float(upper),
        p_positive_before_imaging=float(row["p_detect_before_imaging"]),
        false_positives_per_year=float(row["false_positives_per_year"]),
        level=level,
        rationale=rationale,
    )
