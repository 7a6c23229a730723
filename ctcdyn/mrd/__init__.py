"""Minimal residual disease: CTC monitoring schedules against imaging relapse (DESIGN.md 6)."""

from ._leadtime import LeadTimeResult, default_engine, lead_time
from ._plot import plot_comparison
from ._posterior import posterior_values
from ._schedule import ImagingSchedule, MonitoringSchedule, default_schedule
from ._suggestion import describe_schedule, monitoring_suggestion

__all__ = [
    "ImagingSchedule",
    "LeadTimeResult",
    "MonitoringSchedule",
    "default_engine",
    "default_schedule",
    "describe_schedule",
    "lead_time",
    "monitoring_suggestion",
    "plot_comparison",
    "posterior_values",
]
