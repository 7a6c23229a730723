"""Monitoring and imaging schedules after curative surgery (DESIGN.md section 6).

A :class:`MonitoringSchedule` says when blood is drawn for a CTC test, how much, with which
assay, and what count is called positive; an :class:`ImagingSchedule` says when a scan looks
for relapse and how large a lesion must be to be seen. Times are days from surgery (t = 0 at
midnight of the day of surgery), clock hours 0-24 local time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._units import HOURS_PER_DAY
from ..observation import Assay, get_assay
from ..specs import ModelSpec


@dataclasses.dataclass(frozen=True)
class MonitoringSchedule:
    """Serial CTC tests: every ``interval_days`` from ``first_day`` up to ``horizon_days``.

    Attributes:
        interval_days: days between draws (> 0); 30 monthly, 91 quarterly.
        clock_hour: local clock hour of every draw (0-24); 09:00 a morning clinic, 04:00 a
            night draw at the circadian peak of shedding (Diamantopoulou et al. 2022).
        volume_ml: blood processed per test (mL); ``None`` takes the assay's default volume
            (7.5 mL CellSearch tube, ~2.5 L diagnostic leukapheresis).
        assay: a registered assay name or an :class:`~ctcdyn.observation.Assay`.
        threshold: a test is positive when it counts at least this many CTCs (>= 1).
        horizon_days: last day of monitoring (days from surgery).
        first_day: day of the first draw; ``None`` means one interval after surgery.
        name: label in tables and plots; ``None`` builds one from the settings.
    """

    interval_days: float = 91.0
    clock_hour: float = 9.0
    volume_ml: float | None = None
    assay: str | Assay = "cellsearch"
    threshold: int = 1
    horizon_days: float = 1825.0
    first_day: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_days) and self.interval_days > 0):
            raise ValueError(f"interval_days must be > 0 (days); got {self.interval_days}.")
        if not 0.0 <= self.clock_hour < HOURS_PER_DAY:
            raise ValueError(f"clock_hour must lie in [0, 24) (h); got {self.clock_hour}.")
        if self.volume_ml is not None and not self.volume_ml > 0:
            raise ValueError(f"volume_ml must be > 0 (mL); got {self.volume_ml}.")
        if int(self.threshold) != self.threshold or self.threshold < 1:
            raise ValueError(
                f"threshold must be a whole number of CTCs >= 1; got {self.threshold}."
            )
        if not self.horizon_days > 0:
            raise ValueError(f"horizon_days must be > 0 (days); got {self.horizon_days}.")
        if self.first_day is not None and not 0 <= self.first_day <= self.horizon_days:
            raise ValueError(
                f"first_day must lie in [0, horizon_days = {self.horizon_days:g}]; "
                f"got {self.first_day}."
            )
        get_assay(self.assay)  # an unknown name fails here, listing the known ones

    @property
    def assay_spec(self) -> Assay:
        """The :class:`~ctcdyn.observation.Assay` of the tests."""
        return get_assay(self.assay)

    @property
    def volume(self) -> float:
        """Blood processed per test (mL), the assay's default when not given."""
        if self.volume_ml is not None:
            return float(self.volume_ml)
        return float(self.assay_spec.default_volume_ml)

    @property
    def label(self) -> str:
        """``name``, or e.g. ``"cellsearch 7.5 mL q91d 09:00 >=1"``."""
        if self.name:
            return self.name
        hours = int(self.clock_hour)
        minutes = round(60 * (self.clock_hour - hours))
        return (
            f"{self.assay_spec.name} {self.volume:g} mL q{self.interval_days:g}d "
            f"{hours:02d}:{minutes:02d} >={self.threshold}"
        )

    def draw_days(self) -> np.ndarray:
        """Days of the draws (whole or fractional days from surgery, before the clock hour)."""
        first = self.interval_days if self.first_day is None else self.first_day
        n = math.floor((self.horizon_days - first) / self.interval_days + 1e-9) + 1
        return first + self.interval_days * np.arange(max(n, 0))

    def draw_times(self) -> np.ndarray:
        """Model times of the draws (days from midnight of the day of surgery, clock hour
        included): ``draw_days() + clock_hour / 24``, those within the horizon."""
        times = self.draw_days() + self.clock_hour / HOURS_PER_DAY
        return times[times <= self.horizon_days]


@dataclasses.dataclass(frozen=True)
class ImagingSchedule:
    """Scans for relapse: every ``interval_days`` from ``first_day``.

    Relapse is the first scan at which the metastatic burden has reached ``detection_cells``
    (the spec's ``detection_burden``, ~1e9 cells, when not given). ``interval_days = 0``
    means continuous surveillance: relapse is found the moment the burden reaches the
    detection size (clinical manifestation).

    Attributes:
        interval_days: days between scans (>= 0; 0 = continuous).
        first_day: day of the first scan; ``None`` means one interval after surgery.
        detection_cells: burden a scan sees (cells); ``None`` uses the spec's.
    """

    interval_days: float = 0.0
    first_day: float | None = None
    detection_cells: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_days) and self.interval_days >= 0):
            raise ValueError(
                f"interval_days must be >= 0 (days; 0 = continuous); got {self.interval_days}."
            )
        if self.first_day is not None and not self.first_day >= 0:
            raise ValueError(f"first_day must be >= 0 (days); got {self.first_day}.")
        if self.detection_cells is not None and not self.detection_cells >= 1:
            raise ValueError(f"detection_cells must be >= 1 cell; got {self.detection_cells}.")

    def detection(self, spec: ModelSpec) -> float:
        """Detection size (cells): ``detection_cells`` or the spec's ``detection_burden``."""
        if self.detection_cells is not None:
            return float(self.detection_cells)
        p = spec.parameters.get("detection_burden")
        if p is None:
            raise ValueError(
                f"{spec.path}: the spec declares no detection_burden; pass "
                "ImagingSchedule(detection_cells=...) (imaging sees ~1e9 cells)."
            )
        return float(p.typical() * p.to_internal)

    def found_at(self, crossing: np.ndarray) -> np.ndarray:
        """Day the relapse is found, given the day the burden reached the detection size
        (NaN stays NaN: no relapse)."""
        crossing = np.asarray(crossing, dtype=float)
        if self.interval_days == 0:
            return crossing
        first = self.interval_days if self.first_day is None else self.first_day
        k = np.ceil(np.maximum(crossing - first, 0.0) / self.interval_days - 1e-12)
        return np.where(np.isnan(crossing), np.nan, first + k * self.interval_days)

    @property
    def label(self) -> str:
        if self.interval_days == 0:
            return "continuous"
        return f"every {self.interval_days:g} d"


def default_schedule(spec: ModelSpec, scenario: str = "default") -> MonitoringSchedule:
    """The monitoring schedule a spec's scenario describes (assay, volume, clock hour, draw
    interval from the spacing of its ``draw_days``, horizon = follow-up).

    For ``models/adjuvant.toml`` this is CellSearch, 7.5 mL, every 91 days at 09:00, first
    draw on day 91, for 5 years (1825 days), positive at >= 1 CTC.
    """
    plan = spec.scenario(scenario)
    days = np.asarray(plan.draw_days)
    if days.size < 2:
        raise ValueError(
            f"{spec.path}: scenario {scenario!r} has a single draw day; give the schedule "
            "explicitly with MonitoringSchedule(interval_days=...)."
        )
    interval = float(np.median(np.diff(days)))
    positive = days[days > 0]
    return MonitoringSchedule(
        interval_days=interval,
        clock_hour=plan.draw_clock_hour,
        volume_ml=plan.volume_ml,
        assay=plan.assay,
        threshold=1,
        horizon_days=plan.follow_up_days,
        first_day=float(positive[0]) if positive.size else interval,
    )
