"""Optional inputs of a patient report: results computed elsewhere (survival, MRD monitoring).

The report never invents these numbers. When a section's input is absent the report says "not
computed for this run"; when it is given, it is shown with its credible band and its source.
Both types round-trip through JSON (``from_dict`` / ``to_dict``), so ``ctcdyn report`` can read
them from files written by the survival and MRD tools.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any


def _floats(name: str, values: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers, got {list(values)!r}")
    return out


@dataclasses.dataclass(frozen=True)
class SurvivalSummary:
    """A patient's posterior probability of remaining event-free over the coming months.

    Attributes:
        endpoint: what the event is, in words ("progression-free survival", "overall survival").
        times_days: days from the report's reference day (the latest blood draw), increasing,
            starting at >= 0.
        median: posterior median of P(no event by each time), in [0, 1].
        lower, upper: the credible band at ``level`` (lower <= median <= upper).
        level: credible level of the band (e.g. 0.9).
        model: the survival model and link used, in one line (shown in the report).
    """

    endpoint: str
    times_days: tuple[float, ...]
    median: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    level: float
    model: str

    def __post_init__(self) -> None:
        for name in ("times_days", "median", "lower", "upper"):
            object.__setattr__(self, name, _floats(name, getattr(self, name)))
        n = len(self.times_days)
        if n == 0 or any(len(getattr(self, k)) != n for k in ("median", "lower", "upper")):
            raise ValueError(
                "times_days, median, lower and upper must be non-empty and of equal length"
            )
        if any(b <= a for a, b in zip(self.times_days, self.times_days[1:], strict=False)):
            raise ValueError("times_days must be strictly increasing")
        if self.times_days[0] < 0:
            raise ValueError(f"times_days must be >= 0, got {self.times_days[0]}")
        for lo, mid, hi in zip(self.lower, self.median, self.upper, strict=True):
            if not 0.0 <= lo <= mid <= hi <= 1.0:
                raise ValueError(f"need 0 <= lower <= median <= upper <= 1, got {lo}, {mid}, {hi}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SurvivalSummary:
        """From a JSON-like mapping with this class's field names."""
        return cls(**_fields(cls, data))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


@dataclasses.dataclass(frozen=True)
class MonitoringSuggestion:
    """A suggested CTC monitoring schedule after curative surgery, with its expected benefit.

    Attributes:
        schedule: the schedule in words ("7.5 mL CellSearch at 04:00 every 4 weeks for 2 years").
        lead_time_days_median: posterior median lead time of the first positive test over
            imaging (days; negative: the test is later than imaging).
        lead_time_days_lower, lead_time_days_upper: its credible band at ``level``.
        p_positive_before_imaging: probability that the test turns positive before imaging
            detects a relapse, in [0, 1].
        false_positives_per_year: expected positive tests per year from assay background alone.
        level: credible level of the band (e.g. 0.9).
        rationale: one or two sentences on why this schedule (e.g. compared with which others).
    """

    schedule: str
    lead_time_days_median: float
    lead_time_days_lower: float
    lead_time_days_upper: float
    p_positive_before_imaging: float
    false_positives_per_year: float
    level: float
    rationale: str

    def __post_init__(self) -> None:
        lo, mid, hi = (
            self.lead_time_days_lower,
            self.lead_time_days_median,
            self.lead_time_days_upper,
        )
        if not lo <= mid <= hi:
            raise ValueError(f"need lower <= median <= upper lead time, got {lo}, {mid}, {hi}")
        if not 0.0 <= self.p_positive_before_imaging <= 1.0:
            raise ValueError("p_positive_before_imaging must be in [0, 1]")
        if not self.false_positives_per_year >= 0.0:
            raise ValueError("false_positives_per_year must be >= 0")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitoringSuggestion:
        """From a JSON-like mapping with this class's field names."""
        return cls(**_fields(cls, data))

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = set(data) - names, names - set(data)
    if unknown or missing:
        raise ValueError(
            f"{cls.__name__}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        )
    return dict(data)
